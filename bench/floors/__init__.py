"""The floors: the least an app of each kind does, built from the same libraries (FastAPI + Mangum,
Powertools batch processing) with one boto3 call. jobbridge's functions are measured against them."""
