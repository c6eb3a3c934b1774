"""corpus-proximity: what is in a training corpus, and which part of it a model's answers and
errors come from. The library behind the stage scripts at the repository root:

* ``text``: corpus sources, chunking, embedding models and the embedding stage;
* ``tree``: the recursive cluster tree, its clusterers, its stage and placement in it (``index``);
* ``naming``: offline and LLM names for the tree's nodes and for soft clusters;
* ``llm``: the one chat caller (cache, re-asks, limits) and the bundled local server;
* ``evals``: GSM8K and rollouts, and quality of a tree against labelled corpora;
* ``analysis``: placement of model outputs and the statistics of where errors concentrate;
* ``explore``: the 2-D map, the HTML report and the dashboard's pieces;
* ``soft``: streaming soft clustering of token activations (hot kernels in ``soft/kernels``);
* ``ensemble``: stability of the taxonomy over runs, and feature merging.

``config`` holds every stage's frozen dataclass config, ``cache`` the hash-keyed stage cache.
"""

__version__ = "0.1.0"
