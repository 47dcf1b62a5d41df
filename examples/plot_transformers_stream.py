"""
=========================================================
A Hugging Face transformers encoder, streamed with a DKVB
=========================================================

Pre-trained encoders mostly come from the Hugging Face ``transformers``
library these days (``pip install "skkvb[hf]"``): a ``ViTModel``, a
``CLIPVisionModel``, a ``BertModel``.
:class:`~skkvb.FrozenBackboneTransformer` takes such a model as it is. Its
forward pass returns a ``ModelOutput`` -- a dict of tensors -- and the
``output`` parameter says which entry is the embedding; ``pooling`` turns a
sequence of tokens into one row per sample.

This example streams images class by class through

images -> a frozen ``transformers`` ViT -> :class:`~sklearn.preprocessing.Normalizer`
-> :class:`~skkvb.KeyValueBottleneckClassifier` with frozen keys.

So that it runs anywhere, offline and in seconds, the ViT here is a tiny one
with random weights, built from a configuration. With internet access, a
pre-trained one is a single line (and a larger input size)::

    encoder = ViTModel.from_pretrained("google/vit-base-patch16-224-in21k")
"""

# %%
# The encoder
# -----------
#
# A ViT cuts a 32x32 image into 4x4 patches: 64 tokens, plus a ``[CLS]``
# token in front. Its output holds ``last_hidden_state``, the 65 tokens of
# dimension 64 for each image, and ``pooler_output``, a dense layer on the
# ``[CLS]`` token. By default (``output=None``)
# :class:`~skkvb.FrozenBackboneTransformer` embeds ``pooler_output`` when a
# model has one; here we take the mean of the tokens instead
# (``output="last_hidden_state"``, ``pooling="mean"``), which suits an
# untrained network better. ``pooling="cls"`` would take the first token.
#
# ``preprocess`` turns each ``(3, H, W)`` uint8 image into the model's input:
# resized to the model's size and scaled to ``[-1, 1]``, as ViT's image
# processor does. For a pre-trained ``google/vit-base-patch16-224-in21k``,
# ``size=224``.
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import Normalizer

from skkvb import (
    FrozenBackboneTransformer,
    KeyCodebook,
    KeyValueBottleneckClassifier,
    make_streaming_pipeline,
)
from skkvb.streams import ClassIncrementalSplit

transformers.logging.set_verbosity_error()
config = transformers.ViTConfig(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=32,
    patch_size=4,
)
torch.manual_seed(0)
vit = transformers.ViTModel(config)  # random weights; nothing is downloaded


def vit_input(image, size=config.image_size):
    """One (3, H, W) uint8 image -> ViT's input: resized, scaled to [-1, 1]."""
    image = F.interpolate(image.float()[None] / 255, size=(size, size), mode="bilinear")[0]
    return (image - 0.5) / 0.5


embedder = FrozenBackboneTransformer(
    vit, output="last_hidden_state", pooling="mean", preprocess=vit_input, device="cpu"
)

# %%
# Data: an unlabelled pool, a stream and a test set
# -------------------------------------------------
#
# The 8x8 digits as uint8 images (grayscale images are repeated to RGB). The
# keys are fitted on images set aside without their labels; the rest is a
# stream of five phases of two classes each, and a test set of all ten.
X, y = load_digits(return_X_y=True)
images = np.round(X.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)
images_rest, images_test, y_rest, y_test = train_test_split(
    images, y, test_size=0.3, random_state=0, stratify=y
)
images_pool, images_stream, _, y_stream = train_test_split(
    images_rest, y_rest, test_size=0.6, random_state=0, stratify=y_rest
)

# %%
# Keys fitted once, without labels
# --------------------------------
#
# ``fit`` builds a private, frozen copy of the model; nothing is trained. The
# keys are fitted on the normalised embeddings of the pool and then frozen.
normalizer = Normalizer()
Z_pool = normalizer.transform(embedder.fit(images_pool).transform(images_pool))
codebook = KeyCodebook(n_codebooks=64, n_keys=64, key_dim=8, random_state=0).fit(Z_pool)
print(f"embeddings: {Z_pool.shape[1]} features; keys: {codebook.keys_.shape}")

# %%
# The stream
# ----------
#
# A :class:`~skkvb.StreamingPipeline` pushes each batch through the frozen
# ViT and the normaliser into the classifier's ``partial_fit``. The
# classifier learns of each class when it first comes.
pipeline = make_streaming_pipeline(
    embedder,
    normalizer,
    KeyValueBottleneckClassifier(codebook=FrozenEstimator(codebook), device="cpu"),
)
splitter = ClassIncrementalSplit(5, class_order=range(10), random_state=0)
for phase, indices in enumerate(splitter.split(images_stream, y_stream)):
    pipeline.partial_fit(images_stream[indices], y_stream[indices])
    seen = np.isin(y_test, pipeline[-1].classes_)
    y_pred = pipeline.predict(images_test)
    print(
        f"phase {phase + 1}: classes {pipeline[-1].classes_.tolist()}  accuracy on them "
        f"{np.mean(y_pred[seen] == y_test[seen]):.3f}, on all 10: "
        f"{np.mean(y_pred == y_test):.3f}"
    )

# %%
# With a pre-trained model
# ------------------------
#
# Only the encoder changes. A ViT pre-trained on ImageNet-21k, loaded once
# (this downloads its weights, so it is not run here)::
#
#     encoder = transformers.ViTModel.from_pretrained("google/vit-base-patch16-224-in21k")
#     embedder = FrozenBackboneTransformer(
#         encoder, preprocess=lambda image: vit_input(image, size=224), dtype="bfloat16"
#     )
#
# or CLIP's image tower, ``transformers.CLIPVisionModel.from_pretrained(
# "openai/clip-vit-base-patch32")``, whose ``pooler_output`` is the default
# embedding. ``dtype="bfloat16"`` runs the forward pass under autocast,
# about twice as fast on a recent GPU; ``num_workers=4`` decodes image files
# in four worker processes. A timm model is built by name:
# ``FrozenBackboneTransformer("timm/vit_base_patch16_224.augreg_in21k")``.
#
# Text models take a tokenizer's output as ``X``: each batch is a slice of
# its ``input_ids`` and ``attention_mask`` passed as keyword arguments, and
# ``pooling="mean"`` averages the tokens of the mask only, so that padding
# does not change an embedding::
#
#     tokenizer = transformers.AutoTokenizer.from_pretrained("bert-base-uncased")
#     bert = transformers.BertModel.from_pretrained("bert-base-uncased")
#     embedder = FrozenBackboneTransformer(bert, output="last_hidden_state", pooling="mean")
#     Z = embedder.fit_transform(tokenizer(texts, padding=True, return_tensors="np"))
#
# On these digits the random network's features already give the
# bottleneck something to work with; on natural images, what a pre-trained
# encoder has learnt is what makes it accurate (the paper's CIFAR-10 results
# range from 62.5% with DINO features to 91.3% with CLIP ViT-B/32).
