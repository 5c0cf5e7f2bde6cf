"""``noisyft bench``: a grid of fits (``grid``: the spec, its cells and their locks; ``runner``: running them),
its results table (``results``) and plots (``plots``)."""
