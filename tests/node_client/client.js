// A foreign (Node.js) vmxsim client: proves the wire contract works outside Python.
// Usage: node client.js HOST:PORT PATH/TO/vmxsim.proto
// Creates a vCPU, enters VMX root operation with a current VMCS, VMWRITEs GUEST_RIP and reads
// it back by encoding and by name; prints {"vcpu": ..., "results": [...]} as one JSON line.
"use strict";

const { connect } = require("./vmxsim");

const [address, protoFile] = process.argv.slice(2);
const service = connect(address, protoFile);

function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10000);
    service[method](request, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function main() {
  const created = await call("CreateVcpu", { profile: "kvm", mode: "LATENCY_MODE_NESTED" });
  const vcpu = created.vcpu;
  const instructions = [
    { revid: { address: "4096" }, line: 1 },
    { vmxon: { address: "4096" }, line: 2 },
    { revid: { address: "8192" }, line: 3 },
    { vmptrld: { address: "8192" }, line: 4 },
    { vmwrite: { field: { name: "GUEST_RIP" }, value: "4096" }, line: 5 },
    { vmread: { field: { encoding: "26654" } }, line: 6 }, // 0x681e
    { vmread: { field: { name: "GUEST_RIP" } }, line: 7 },
    { vmwrite: { field: { name: "VM_EXIT_REASON" }, value: "1" }, line: 8 },
  ];
  const executed = await call("Execute", { vcpu_id: vcpu.vcpu_id, instructions });
  const state = await call("GetVcpu", { vcpu_id: vcpu.vcpu_id });
  console.log(JSON.stringify({ vcpu: state.vcpu, results: executed.results }));
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`error: ${error.code} ${error.details || error.message}`);
    process.exit(1);
  },
);
