import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="scenetok-torch-home-"))

import pytest  # noqa: E402
import torch  # noqa: E402

pytest_plugins = ["scenetok.testing.fixtures"]

# Two cores: keep each test process single-threaded so pytest-xdist workers do not fight.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
