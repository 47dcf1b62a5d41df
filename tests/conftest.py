import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


# The suite runs on tiny tensors, where intra-op parallelism only adds thread
# synchronisation (and stalls badly when the cores are shared). Benchmarks in
# benchmarks/ measure the multi-threaded speed.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_split():
    """Standardised raw pixels of sklearn's digits, 70/30 stratified split."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def class_incremental(X, y, n_phases=5):
    """Yield (X, y) of each phase: classes in pairs, in order."""
    classes = np.unique(y)
    for phase in np.array_split(classes, n_phases):
        mask = np.isin(y, phase)
        yield X[mask], y[mask]
