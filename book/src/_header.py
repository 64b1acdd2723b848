# %% tags=["remove-cell"]
# Colab only: install diffusion_lib (with the book's extras) at the release
# this book is written for, from the book's repository. Outside Colab this
# cell does nothing.
import subprocess
import sys

REPO_URL = "@REPOSITORY_URL@"
REPO_REF = "@LIBRARY_TAG@"
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"diffusion_lib[book] @ git+{REPO_URL}@{REPO_REF}"],
                   check=True)

