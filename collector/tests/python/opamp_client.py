"""The OpenTelemetry Python OpAMP client (opentelemetry-opamp-client, plain-HTTP transport)
against the Vantage collector, run by collector/tests/opamp_clients.rs.

Registers with a description (labels env, host.name, service.name), waits for a remote
configuration, reports it APPLIED with its hash (and the bodies as effective config), then
prints one JSON line and disconnects. Environment: VANTAGE_OPAMP_URL, VANTAGE_TOKEN,
OPAMP_ENV (label env), OPAMP_TIMEOUT_S.
"""

import json
import os
import sys
import threading

from opentelemetry._opamp.agent import OpAMPAgent
from opentelemetry._opamp.callbacks import OpAMPCallbacks
from opentelemetry._opamp.client import OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2


class Callbacks(OpAMPCallbacks):
    def __init__(self):
        self.done = threading.Event()
        self.result = {}
        self.errors = []

    def on_connect(self, agent, client):
        pass

    def on_connect_failed(self, agent, client, error):
        self.errors.append(str(error))

    def on_error(self, agent, client, error_response):
        self.errors.append(error_response.error_message)

    def on_message(self, agent, client, message):
        remote = message.remote_config
        if remote is None or self.result:
            return
        # Vantage sends YAML (text/yaml); this client only parses JSON itself, so the
        # bodies are taken as they are, which is what an agent applying YAML does.
        bodies = {
            name: entry.body.decode("utf-8")
            for name, entry in remote.config.config_map.items()
        }
        status = client.update_remote_config_status(
            remote_config_hash=remote.config_hash,
            status=opamp_pb2.RemoteConfigStatuses_APPLIED,
        )
        client.update_effective_config(bodies, "text/yaml")
        if status is not None:
            agent.send(
                client.build_remote_config_status_response_message(status),
                callback=self.done.set,
            )
        self.result = {
            "instance_uid": client._instance_uid.hex(),
            "config_hash": remote.config_hash.hex(),
            "names": sorted(bodies),
            "bodies": bodies,
        }


def main():
    url = os.environ["VANTAGE_OPAMP_URL"]
    token = os.environ["VANTAGE_TOKEN"]
    timeout = float(os.environ.get("OPAMP_TIMEOUT_S", "30"))
    callbacks = Callbacks()
    client = OpAMPClient(
        endpoint=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout_millis=5000,
        agent_identifying_attributes={"service.name": "python-opamp"},
        agent_non_identifying_attributes={
            "env": os.environ.get("OPAMP_ENV", "prod"),
            "host.name": "python-host",
            "os.type": "linux",
        },
    )
    agent = OpAMPAgent(interval=1, callbacks=callbacks, client=client, max_retries=3)
    agent.start()
    ok = callbacks.done.wait(timeout)
    agent.stop(timeout=5)
    if not ok:
        print(json.dumps({"error": "no remote config applied", "errors": callbacks.errors}))
        sys.exit(1)
    callbacks.result["errors"] = callbacks.errors
    print(json.dumps(callbacks.result))


if __name__ == "__main__":
    main()
