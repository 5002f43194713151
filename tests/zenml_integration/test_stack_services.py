"""The stack services from the host, with ZenML's own clients (``make stack-services``).

The object store takes s3fs/botocore from the ZenML environment as ZenML's S3 artifact store uses
them (botocore 1.36 and later send checksum trailers, which older SeaweedFS releases refused), and
the ZenML server accepts the stack's service-account API key and counts as a remote server for
the client (a stack with remote components needs one). ``stack.json`` is what ``e2e/stack.py``
writes; pods reach the same services by Service name (``tests/realnode/test_pod_network.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster


def test_s3fs_puts_and_gets_through_the_object_store(stack_info: dict[str, Any]) -> None:
    import botocore
    import s3fs

    s3 = stack_info["s3"]
    fs = s3fs.S3FileSystem(
        key=s3["aws_access_key_id"],
        secret=s3["aws_secret_access_key"],
        client_kwargs={"endpoint_url": s3["endpoint_url"], "region_name": s3["region"]},
    )
    base = f"{s3['bucket']}/tests/{uuid.uuid4().hex}"
    payload = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk of the filer
    fs.pipe(f"{base}/blob.bin", payload)
    with fs.open(f"{base}/text.txt", "w") as f:
        f.write("artifact")
    # A multipart upload too (parts of 5 MiB, the S3 minimum), as large artifacts are written.
    big = os.urandom(11 * 1024 * 1024)
    with fs.open(f"{base}/big.bin", "wb", block_size=5 * 1024 * 1024) as f:
        for i in range(0, len(big), 1 << 20):
            f.write(big[i : i + (1 << 20)])
    assert fs.cat(f"{base}/blob.bin") == payload
    assert fs.cat(f"{base}/text.txt") == b"artifact"
    assert fs.cat(f"{base}/big.bin") == big
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(base))
    assert names == ["big.bin", "blob.bin", "text.txt"]
    fs.rm(base, recursive=True)
    fs.invalidate_cache()
    assert not fs.exists(f"{base}/text.txt")
    major, minor = (int(x) for x in botocore.__version__.split(".")[:2])
    assert (major, minor) >= (1, 36), "the checksum-trailer case needs botocore >= 1.36"


CLIENT = """
import json
from zenml.client import Client
c = Client()
store = c.zen_store
print(json.dumps({
    'user': c.active_user.name,
    'local': store.is_local_store(),
    'server_id': str(store.get_store_info().id),
    'type': str(store.type),
}))
"""


def test_the_host_logs_in_with_the_service_account_api_key(
    stack_info: dict[str, Any], tmp_path: Path
) -> None:
    z = stack_info["zenml"]
    env = {
        **os.environ,
        "ZENML_CONFIG_PATH": str(tmp_path / "zenml"),
        "ZENML_STORE_URL": z["url"],
        "ZENML_STORE_API_KEY": z["api_key"],
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
    }
    r = subprocess.run(
        [sys.executable, "-c", CLIENT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["user"] == z["service_account"]
    assert out["local"] is False
    assert out["server_id"] == z["server_id"]
    assert out["type"].lower().endswith("rest")
