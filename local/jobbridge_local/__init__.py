"""The jobbridge local stack: the whole system on one machine, no AWS account, no Docker.

moto server plays AWS on loopback; the tables and queues are created from template.yaml's own
resource properties; the API runs under uvicorn; the template's event source mappings are
emulated by pollers that call the real handlers with real-shaped events. Nothing outside this
package knows it is local: boto3 reaches moto through ``AWS_ENDPOINT_URL`` only.

Modules: ``template`` (read and resolve template.yaml), ``resources`` (create tables/queues),
``motoserver`` (the emulator process), ``tokens`` (local JWTs), ``stream_poller`` (the
DynamoDB stream trigger), ``invoke`` (``sam local invoke`` without Docker), ``stack`` (``make
run``), ``cli`` (``jobbridge local ...``).
"""
