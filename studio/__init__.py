"""Stable Diffusion studio: one model manager shared by every tab of a Gradio app."""
