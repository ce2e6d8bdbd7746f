"""Running workflows on ComfyUI: the client, workflow templates, dispatcher and monitor."""
