# vidx: the Debian 12 packages the demo and the tests need, in one place.
# Sourced (not run) by bench/demo.sh, test/run_all.sh and .ci/run.
#
#   vidx_need_packages CALLER PACKAGE...
#     installs the packages that are not installed yet (apt-get update, then
#     apt-get install) when run as root; otherwise names them, with the command
#     that installs them, and exits 2. Nothing happens when all are installed.

# What bench/demo.sh needs: build, server, Fashion-MNIST and the Python client.
VIDX_DEMO_PACKAGES=(
	build-essential postgresql-15 postgresql-server-dev-15
	dataset-fashion-mnist python3-numpy python3-psycopg
)

# What the whole test suite needs (test/run_all.sh): the above, plus CMake and
# GoogleTest (core unit tests), pgTAP and pg_prove, clang and its sanitizer
# runtime (fuzzing, in the robustness suite), clang-format (make format),
# Google Benchmark (bench/micro), matplotlib and faiss (bench/ scripts), strace
# (the robustness suite watches a build's fsync calls).
VIDX_TEST_PACKAGES=(
	"${VIDX_DEMO_PACKAGES[@]}"
	cmake clang-format clang-14 libclang-rt-14-dev
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	libgtest-dev libgmock-dev libbenchmark-dev
	python3-matplotlib python3-faiss strace
)

# The Node.js client test (test/node/run.sh: npm packages pg and pgvector from
# the npm registry). test/run_all.sh installs these only when node or npm is
# missing (a machine may have Node.js from elsewhere, e.g. nodesource, whose
# nodejs package ships npm itself).
VIDX_NODE_PACKAGES=(nodejs npm)

vidx_need_packages() {
	local caller=$1 p
	shift
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "$caller: these packages are missing: ${missing[*]}" >&2
		echo "$caller: run it as root to install them, or install them first:" >&2
		echo "  apt-get install --no-install-recommends ${missing[*]}" >&2
		exit 2
	fi
	echo "$caller: installing packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" </dev/null
}
