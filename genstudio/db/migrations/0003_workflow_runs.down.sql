-- Undo 0003. The jobs themselves stay in the job tables; only the dispatch bookkeeping, the
-- server health and the uploads table go (uploaded files stay in storage).

DROP TABLE IF EXISTS genstudio.workflow_runs CASCADE;
DROP TABLE IF EXISTS genstudio.comfy_servers CASCADE;
DROP TABLE IF EXISTS genstudio.uploads CASCADE;
DROP FUNCTION IF EXISTS genstudio.notify_workflow_run_queued() CASCADE;
REVOKE USAGE ON SCHEMA genstudio FROM authenticated, service_role;
