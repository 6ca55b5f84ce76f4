# Sourced by the reference scripts: makes sure the pinned Python environment build/pyref exists
# (built from requirements.txt when it is missing or the requirements changed) and, with
# PYREF_GGUF=1, the GGUF loader's extra packages in build/pyref-gguf (requirements-gguf.txt).
# Sets PYREF to the interpreter and exports PYTHONPATH for the extras. Run from the repository root.
# PYTHON names the interpreter for a new virtualenv (default python3).
venv=build/pyref
req=scripts/reference/requirements.txt
stamp=$venv/requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "pyref: building $venv from $req (about 2.4 GB to download, 4.3 GB on disk)" >&2
	rm -rf "$venv"
	"${PYTHON:-python3}" -m venv "$venv"
	# --no-deps: requirements.txt is the full, pinned set. torch's declared dependencies would
	# also bring triton and more CUDA wheels that a CPU run never loads.
	"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: -r "$req"
	echo "$want" >"$stamp"
fi
PYREF=$venv/bin/python
if [ "${PYREF_GGUF:-}" = 1 ]; then
	extra=build/pyref-gguf
	greq=scripts/reference/requirements-gguf.txt
	gwant=$(cat "$req" "$greq" | sha256sum | cut -d' ' -f1)
	if [ "$(cat "$extra/requirements.sha256" 2>/dev/null)" != "$gwant" ]; then
		echo "pyref: installing $greq into $extra" >&2
		rm -rf "$extra"
		"$PYREF" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
			--require-hashes --target "$extra" -r "$greq"
		echo "$gwant" >"$extra/requirements.sha256"
	fi
	export PYTHONPATH="$PWD/$extra${PYTHONPATH:+:$PYTHONPATH}"
fi
