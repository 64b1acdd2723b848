# %% tags=["remove-cell"]
# Colab only: install diffusion_lib (with the book's extras) from the
# book's repository. Outside Colab this cell does nothing.
REPO_URL = "https://github.com/dive-into-diffusion/dive-into-diffusion"
REPO_REF = "main"
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"diffusion_lib[book] @ git+{REPO_URL}@{REPO_REF}"],
                   check=True)

