"""Install h11 (lynkr's one dependency) into the folder named by argv[1], for the Dockerfile.

A wheel in the build context's container/wheels/ wins (a base image without pip, a build without
network): h11 is pure Python, so unpacking its wheel onto PYTHONPATH is an install. Without one, pip
fetches it from the package index.
"""

import glob
import subprocess
import sys
import zipfile

target = sys.argv[1]
wheels = sorted(glob.glob("/tmp/wheels/h11-*-py3-none-any.whl"))
if wheels:
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(target)
    print(f"h11 from {wheels[-1]}")
else:
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target", target, "h11>=0.16"]
    )
