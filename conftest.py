"""Root pytest configuration, loaded before anything imports scipy.

scikit-learn's common check ``check_array_api_input`` (dispatch enabled, NumPy
inputs: results must not change) only runs when scipy was imported with
``SCIPY_ARRAY_API=1``; without it the check is skipped.
"""

import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")
