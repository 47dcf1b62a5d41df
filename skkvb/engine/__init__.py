"""The engine of the bottleneck: pure torch functions, no scikit-learn.

Modules, in the order of the data path:

- :mod:`~skkvb.engine.heads`: the fixed projection of inputs into heads (step 1);
- :mod:`~skkvb.engine.keys`: EMA fitting of the per-codebook keys (step 2);
- :mod:`~skkvb.engine.codes`: the nearest-key search, codes, usage counts (step 3);
- :mod:`~skkvb.engine.values`: value rules behind one interface and the decoder (steps 4-5);
- :mod:`~skkvb.engine.decoders`: the learned decoder of the paper's ablation, in place
  of the mean (step 5);
- :mod:`~skkvb.engine.threads` and :mod:`~skkvb.engine.seeding`: CPU threads and
  CPU-side random draws shared by the steps.

Tensors stay on whatever device the caller put them on; the estimators above
validate inputs and convert to and from numpy.
"""
