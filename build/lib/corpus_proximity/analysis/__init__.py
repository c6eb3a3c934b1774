"""Where model outputs sit in the tree (``annotate``) and whether their errors concentrate in some
regions (``stats``: chi-squared, Cramér's V, Fisher, Benjamini-Hochberg)."""
