"""Talking to chat models: the bundled local llama.cpp server (``local``)."""
