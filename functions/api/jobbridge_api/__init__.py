"""The jobbridge HTTP API: FastAPI, served by Mangum in Lambda and by uvicorn locally."""
