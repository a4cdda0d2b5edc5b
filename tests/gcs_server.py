"""Runs gcp-storage-emulator on loopback, adding the one GCS behaviour it lacks that we rely on.

    python -m tests.gcs_server --port 9023 [--bucket demo]

The emulator ignores `ifGenerationMatch`; real GCS answers 412 Precondition Failed when the
object's generation is not the one named (0: the object must not exist). The storage layer
uses that to keep two writers from overwriting each other's manifest or run summary, and the
run-id lease renews, takes over and releases only the generation it read; so the server used
by the tests enforces it for simple and multipart uploads and for deletes. The emulator's
HTTP server handles one request at a time, so the check and the write are one step.
"""

import argparse
import logging
from http import HTTPStatus

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_original_insert = objects.insert


_original_delete = objects.delete


def _precondition_holds(request, storage, name: str | None) -> bool:
    """False when `ifGenerationMatch` names another generation than the object's (0: absent)."""
    wanted = request.query.get("ifGenerationMatch", [None])[0]
    if wanted is None:
        return True
    try:
        current = storage.get_file_obj(request.params["bucket_name"], name)["generation"]
    except NotFound:
        current = "0"  # absent
    return str(current) == wanted


def _refuse(response) -> None:
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold."}})


def _insert_with_precondition(request, response, storage, *args, **kwargs):
    name = request.query.get("name", [None])[0]
    if name is None and isinstance(request.data, dict):
        name = (request.data.get("meta") or {}).get("name")
    if not _precondition_holds(request, storage, name):
        return _refuse(response)
    return _original_insert(request, response, storage, *args, **kwargs)


def _delete_with_precondition(request, response, storage, *args, **kwargs):
    if not _precondition_holds(request, storage, request.params["object_id"]):
        return _refuse(response)
    return _original_delete(request, response, storage, *args, **kwargs)


def _install_precondition_support() -> None:
    replacements = {_original_insert: _insert_with_precondition, _original_delete: _delete_with_precondition}
    objects.insert, objects.delete = _insert_with_precondition, _delete_with_precondition
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in replacements:
                handlers[method] = replacements[handler]


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
