"""The recursive cluster tree: the algorithm (``build``), its clusterers and reducers, the tree
itself (``tree``), its cached stage (``stage``) and placement of new vectors in it (``index``)."""
