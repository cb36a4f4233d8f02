"""The mlx-kv terminal app (Textual): chat, long documents, and the live memory dashboard.

Entry point: ``app.app.run_app(model, budget, policy)`` (``mlx-kv chat``).
Nothing in this package imports MLX; the engine runs on its own thread.
"""
