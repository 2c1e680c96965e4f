#!/usr/bin/env python3
"""A stand-in for Azure's instance metadata service on loopback, for the tests.

GET /metadata/instance/compute answers a compute document with the fields the agent reads
(vmId, vmSize, location, storageProfile.imageReference, as Azure documents them) when the
request carries `Metadata: true`, and 400 without it, as IMDS does. --delay S holds every
answer S seconds (a service that does not answer in time). The port goes to --port-file.
"""
import argparse
import http.server
import json
import pathlib
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port-file", required=True)
ap.add_argument("--delay", type=float, default=0)
args = ap.parse_args()

COMPUTE = {
    "azEnvironment": "AzurePublicCloud",
    "location": "westeurope",
    "name": "ws-gpu-01",
    "osType": "Linux",
    "resourceGroupName": "ml-workspace",
    "storageProfile": {"imageReference": {"id": "", "offer": "ubuntu-hpc", "publisher": "microsoft-dsvm",
                                          "sku": "1804", "version": "18.04.2021120101"}},
    "subscriptionId": "00000000-0000-0000-0000-000000000000",
    "vmId": "13f56399-bd52-4150-9748-7190aae1ff21",
    "vmSize": "Standard_NC24ads_A100_v4",
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(args.delay)
        if self.headers.get("Metadata") != "true":
            self.answer(400, {"error": "Bad request. Required metadata header not specified"})
        elif self.path.startswith("/metadata/instance/compute"):
            self.answer(200, COMPUTE)
        else:
            self.answer(404, {"error": "Not found"})

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *a):
        print(f"{self.command} {self.path} Metadata={self.headers.get('Metadata')}", flush=True)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
tmp = pathlib.Path(args.port_file + ".tmp")
tmp.write_text(f"{server.server_address[1]}\n")
tmp.rename(args.port_file)
server.serve_forever()
