"""The migration from the legacy feature tables (multitalk_jobs, style_transfers, edited_images,
datasets + data) into the output-type job tables: `genstudio legacy …`, docs/legacy-migration.md."""
