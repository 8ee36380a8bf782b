"""`make demo`: the product's story on the local control plane, narrated with kubectl.

Runs with KUBECONFIG pointing at the cluster and the pinned kubectl first on PATH
(the Makefile sets both).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(command: str) -> str:
    print(f"$ {command}", flush=True)
    proc = subprocess.run(
        shlex.split(command), check=False, cwd=REPO, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    print(out.rstrip(), flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed at: {command}")
    return out


def main() -> int:
    say("The three kinds, generated from the pydantic models")
    run("kubectl apply -f crds/")
    run("kubectl wait --for=condition=Established crd --all --timeout=60s")
    run("kubectl get crd -o custom-columns=NAME:.metadata.name,SHORT:.spec.names.shortNames")
    say("Every field is documented for kubectl explain")
    run("kubectl explain recommendation.spec.riskLevel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
