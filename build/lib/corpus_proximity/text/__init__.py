"""Text in: corpus sources, chunking into token windows, embedding models and the embedding stage."""
