"""Names for the tree's nodes (offline keyphrases or an LLM) and for soft clusters, and reading a
named tree in the terminal."""
