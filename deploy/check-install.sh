#!/usr/bin/env bash
# The Dockerfile's install steps, in a clean virtualenv: the core installs without any vendor library,
# the console script and `python -m oomnitza_connector` answer, and the demo syncs on the lean install.
# Run by .ci/run; usable by hand: deploy/check-install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip wheel --quiet --wheel-dir "$tmp/wheels" .
"$py" -m pip install --quiet --no-index "$tmp"/wheels/*.whl
"$tmp/venv/bin/oomnitza-connector" --version
"$py" -m oomnitza_connector version
"$py" - <<'PY'
import importlib.util, sys
extras = ["ldap3", "msal", "google.auth", "pymssql", "pyodbc", "zeep", "hvac", "keyrings.cryptfile", "requests"]
def present(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False
found = [name for name in extras if present(name)]
if found:
    sys.exit(f"the core install pulled in {found}: they belong to extras")
PY
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
size=$(cd "$site" && du -scm -- $(ls | grep -Ev '^(pip|setuptools|pkg_resources|_distutils_hack)') | tail -1 | cut -f1)
echo "core install: ${size} MB in site-packages (pip and setuptools not counted)"
mkdir "$tmp/demo"
cp examples/demo.ini examples/assets.csv examples/users.csv "$tmp/demo/"
(cd "$tmp/demo" && "$tmp/venv/bin/oomnitza-connector" upload csv_assets csv_users --ini demo.ini >/dev/null)
summary=$(cd "$tmp/demo" && "$tmp/venv/bin/oomnitza-connector" local summary --ini demo.ini)
grep -q assets <<<"$summary"
echo "lean install: ok"
