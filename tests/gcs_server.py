"""Runs gcp-storage-emulator on loopback, adding the one GCS behaviour it lacks that we rely on.

    python -m tests.gcs_server --port 9023 [--bucket demo]

The emulator ignores `ifGenerationMatch`; real GCS answers 412 Precondition Failed to a
create-only upload (`ifGenerationMatch=0`) when the object exists. The storage layer uses
exactly that to keep two writers from overwriting each other's manifest or run summary,
so the server used by the tests enforces it for simple and multipart uploads.
"""
import argparse
import logging
from http import HTTPStatus

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_original_insert = objects.insert


def _insert_with_precondition(request, response, storage, *args, **kwargs):
    if request.query.get("ifGenerationMatch", [None])[0] == "0":
        name = request.query.get("name", [None])[0]
        if name is None and isinstance(request.data, dict):
            name = (request.data.get("meta") or {}).get("name")
        try:
            storage.get_file_obj(request.params["bucket_name"], name)
        except NotFound:
            pass  # absent: the create may proceed
        else:
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold."}})
            return None
    return _original_insert(request, response, storage, *args, **kwargs)


def _install_precondition_support() -> None:
    objects.insert = _insert_with_precondition
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is _original_insert:
                handlers[method] = _insert_with_precondition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", help="a bucket to create at start")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _install_precondition_support()
    emulator_server.create_server(args.host, args.port, in_memory=True, default_bucket=args.bucket).run()


if __name__ == "__main__":
    main()
