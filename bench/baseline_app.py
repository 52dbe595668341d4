"""Baseline for the benchmark: the cheapest FastAPI endpoint, a small JSON body and no database.

Run by bench/run.py as `uvicorn baseline_app:app --app-dir bench`.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
