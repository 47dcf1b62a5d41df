"""The order of the examples in the gallery (sphinx-gallery sort key).

It lives in a module, not in conf.py, so that Sphinx can pickle the
configuration: sphinx-gallery imports it by its qualified name.
"""

EXAMPLE_ORDER = [
    "plot_toy_forgetting.py",
    "plot_class_incremental_digits.py",
    "plot_frozen_encoder_stream.py",
    "plot_key_usage.py",
    "plot_calibration.py",
    "plot_ablation.py",
    "plot_decoder_ablation.py",
]


class ExampleOrder:
    """Sort examples as in ``EXAMPLE_ORDER``; any other file after them, by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in EXAMPLE_ORDER:
            return (EXAMPLE_ORDER.index(filename), filename)
        return (len(EXAMPLE_ORDER), filename)

    def __repr__(self):
        return f"{type(self).__name__}()"
