// The Node OpAMP client @elastic/opamp-client-node (plain-HTTP transport) against the
// Vantage collector, run by collector/tests/opamp_clients.rs.
//
// Registers with a description (labels env, host.name, service.name), waits for a
// remote configuration, reports it APPLIED with its hash, then prints one JSON line and
// shuts down (which sends AgentDisconnect). Environment: VANTAGE_OPAMP_URL,
// VANTAGE_TOKEN, OPAMP_ENV (label env), OPAMP_TIMEOUT_S.
'use strict';

const {
    createOpAMPClient,
    AgentCapabilities,
    RemoteConfigStatuses,
} = require('@elastic/opamp-client-node');

const timeoutMs = 1000 * Number(process.env.OPAMP_TIMEOUT_S || '30');
let result = null;
let client = null;

function hex(bytes) {
    return Buffer.from(bytes).toString('hex');
}

client = createOpAMPClient({
    endpoint: process.env.VANTAGE_OPAMP_URL,
    headers: {Authorization: `Bearer ${process.env.VANTAGE_TOKEN}`},
    heartbeatIntervalSeconds: 1,
    capabilities:
        AgentCapabilities.AgentCapabilities_AcceptsRemoteConfig |
        AgentCapabilities.AgentCapabilities_ReportsRemoteConfig,
    onMessage: ({remoteConfig}) => {
        if (!remoteConfig || result) {
            return;
        }
        const bodies = {};
        const map = (remoteConfig.config && remoteConfig.config.configMap) || {};
        for (const [name, file] of Object.entries(map)) {
            bodies[name] = Buffer.from(file.body).toString('utf8');
        }
        client.setRemoteConfigStatus({
            status: RemoteConfigStatuses.RemoteConfigStatuses_APPLIED,
            lastRemoteConfigHash: remoteConfig.configHash,
        });
        result = {
            instance_uid: hex(client.getInstanceUid()),
            config_hash: hex(remoteConfig.configHash),
            names: Object.keys(bodies).sort(),
            bodies,
        };
        // Give the status report one heartbeat to leave before shutting down.
        setTimeout(finish, 2500);
    },
});
client.setAgentDescription({
    identifyingAttributes: {'service.name': 'node-opamp'},
    nonIdentifyingAttributes: {
        env: process.env.OPAMP_ENV || 'prod',
        'host.name': 'node-host',
        'os.type': 'linux',
    },
});
client.start();

const timer = setTimeout(finish, timeoutMs);

async function finish() {
    clearTimeout(timer);
    try {
        await client.shutdown();
    } catch (err) {
        // already shut down
    }
    if (!result) {
        console.log(JSON.stringify({error: 'no remote config applied'}));
        process.exit(1);
    }
    console.log(JSON.stringify(result));
    process.exit(0);
}
