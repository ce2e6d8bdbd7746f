"""genstudio: job store, API and ComfyUI runner for generative-AI studios."""

__version__ = "0.1.0"
