"""Before `make setup` builds the venv: is this Python one the pinned packages can install on?

Run by the Python the Makefile picked.  Fails with one sentence when the version is outside
pyproject's requires-python, or when pip finds no wheel of the torch that requirements.lock
pins for it.  Written for any Python 3, so that an old one still gets the sentence.
"""
# ruff: noqa: UP021, UP022, UP031, FURB167 - no capture_output/text/f-strings before 3.7
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def requires_python():
    """(lowest, first unsupported) minor versions from pyproject's requires-python."""
    text = (REPO / "pyproject.toml").read_text()
    spec = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1)
    low = re.search(r">=\s*3\.(\d+)", spec)
    high = re.search(r"<\s*3\.(\d+)", spec)
    return spec, int(low.group(1)), int(high.group(1))


def torch_pin():
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.lower().startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit("requirements.lock pins no torch")


def fail(sentence):
    print("make: " + sentence, file=sys.stderr)
    sys.exit(1)


def torch_versions():
    """The torch releases pip can install here: local find-links and the index, wheels only."""
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "torch",
                        "--only-binary=:all:"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, check=False)
    found = re.search(r"Available versions:\s*(.*)", r.stdout)
    if r.returncode != 0 or not found:
        return None, (r.stderr.strip().splitlines() or ["pip index found nothing"])[-1]
    return [v.strip() for v in found.group(1).split(",")], ""


def main():
    spec, low, high = requires_python()
    minor = sys.version_info[:2]
    here = "Python %d.%d at %s" % (minor[0], minor[1], sys.executable)
    names = ["3.%d" % m for m in range(low, high)]
    supported = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    if minor[0] != 3 or not low <= minor[1] < high:
        fail("Quart-FaaS needs Python %s (requires-python %s) and found %s: install "
             "python3.%d, or run make PYTHON=/path/to/python3.%d" % (supported, spec, here,
                                                                  low, low))
    pin = torch_pin()
    versions, why = torch_versions()
    # a local build such as 2.13.0+cpu (find-links) satisfies the pin 2.13.0
    if versions is None or pin not in [v.split("+")[0] for v in versions]:
        fail("requirements.lock pins torch==%s and pip finds no wheel of it for %s (%s): run "
             "make PYTHON=/path/to/python3.%d" % (
                 pin, here, why or "it offers " + ", ".join(versions[:3]) + ", ...", low))
    if minor[1] != low:
        print("make: note: with %s pip may download torch==%s from PyPI, a CUDA build with its "
              "nvidia libraries (several GB); a CPU wheel for Python 3.%d in pip's find-links "
              "(as on the project's machines) avoids that" % (here, pin, low))


if __name__ == "__main__":
    main()
