"""Serve a trained workdir over HTTP (the same command as `s2s-serve` after `pip install ".[serve]"`).

    python serve.py --workdir runs/quickstart            # then open http://127.0.0.1:8000/
    curl -s localhost:8000/translate -H 'content-type: application/json' -d '{"text": "seventy-seven"}'

The flags live in s2s_jax/cli/serve.py; the API in s2s_jax/serving/app.py.
"""

from s2s_jax.cli import serve  # sets OPENBLAS_NUM_THREADS before numpy/jax load

if __name__ == "__main__":
    serve.main()
