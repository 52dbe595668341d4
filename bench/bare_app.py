"""The cheapest FastAPI endpoint, for information: a route on the app itself, a small JSON body.

Run by bench/run.py as `uvicorn bare_app:app --app-dir bench`.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
