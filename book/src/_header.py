# %% tags=["remove-cell"]
# Colab only: clone the book's repository at the release this book is written
# for (the chapters load the trained models in its book/models/), install
# diffusion_lib from it with the book's extras, and work in its book/ folder.
# Outside Colab this cell does nothing.
import os
import subprocess
import sys

REPO_URL = "@REPOSITORY_URL@"
REPO_REF = "@LIBRARY_TAG@"
if "google.colab" in sys.modules:
    clone = "/content/dive-into-diffusion"
    if not os.path.isdir(clone):
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch",
                        REPO_REF, REPO_URL, clone], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"{clone}[book]"], check=True)
    os.chdir(f"{clone}/book")
