-- Start of every pgTAP file in test/t (each sets :schema, then \ir's this):
-- psql settings for pg_prove, the extensions, a fresh schema for the file's
-- objects first in search_path, and the shared helpers in that schema.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS vidx;
DROP SCHEMA IF EXISTS :"schema" CASCADE;
CREATE SCHEMA :"schema";
SET search_path = :"schema", public;
\ir pgtap_helpers.sql
