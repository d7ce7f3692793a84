#!/usr/bin/env bash
# vidx: the Node.js client test (test/node/vidx_pgvector.test.mjs) — a pgvector
# user's application (npm packages pg and pgvector) against a vector column
# indexed by vidx. Run inside a cluster with vidx, vidx_pgvector and pgvector
# installed (test/run_all.sh runs it in its pg_virtualenv cluster; PGHOST etc.
# set). Needs node and npm (Debian packages nodejs and npm, which run_all.sh
# installs from test/packages.sh when missing) and the npm registry: the
# packages are installed with `npm ci` from package-lock.json into
# test/node/node_modules.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
for tool in node npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "test/node/run.sh: '$tool' not found (Debian packages nodejs and npm)" >&2
		exit 2
	fi
done
echo "node $(node --version), npm $(npm --version)"
if [ ! -d node_modules/pg ] || [ ! -d node_modules/pgvector ]; then
	npm ci --no-audit --no-fund --loglevel=error
fi
node vidx_pgvector.test.mjs
