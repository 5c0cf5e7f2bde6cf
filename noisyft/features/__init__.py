"""Images through a backbone: the data loader and forward pass (``loader``), frozen features computed once and
cached on disk (``cache``), and a split's eval-preprocessed images kept in memory (``decoded``)."""
