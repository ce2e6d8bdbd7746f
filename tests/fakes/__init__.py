"""Test doubles. The only one is the fake ComfyUI (`tests.fakes.comfyui`)."""

from tests.fakes.comfyui import FakeComfyUI, fake_comfy, fake_comfy_factory

__all__ = ["FakeComfyUI", "fake_comfy", "fake_comfy_factory"]
