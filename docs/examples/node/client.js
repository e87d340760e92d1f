// A layerscope client in Node.js, generated at run time from the shipped .proto files.
//
//   layerscope protos --out protos          # or: python -c "from layerscope.protos import
//                                           #      write_protos; write_protos('protos')"
//   npm install
//   node client.js 127.0.0.1:50051 protos data.json
//
// data.json: {"features": [[...], ...], "labels": [...], "orders": [1, 5]}. Prints one JSON
// object: the server's health and the indices of ComputeIndices.
"use strict";

const path = require("path");
const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const CHUNK = 1 << 20; // bytes per Chunk message (the server takes up to 4 MiB)

function load(protoDir) {
  const definition = protoLoader.loadSync(
    ["layerscope/v1/analysis.proto", "health.proto"],
    {
      includeDirs: [protoDir, __dirname],
      keepCase: true, // field names as in the .proto: high_order_si, n_samples
      longs: Number,
      enums: String,
      oneofs: true,
    },
  );
  return grpc.loadPackageDefinition(definition);
}

// Tensors travel as raw little-endian bytes: float64 features, int64 labels.
function float64Bytes(rows) {
  const d = rows[0].length;
  const buf = Buffer.alloc(8 * rows.length * d);
  rows.forEach((row, i) => row.forEach((v, j) => buf.writeDoubleLE(v, 8 * (i * d + j))));
  return buf;
}

function int64Bytes(values) {
  const buf = Buffer.alloc(8 * values.length);
  values.forEach((v, i) => buf.writeBigInt64LE(BigInt(v), 8 * i));
  return buf;
}

function check(health) {
  return new Promise((resolve, reject) => {
    health.Check({ service: "" }, (err, res) => (err ? reject(err) : resolve(res.status)));
  });
}

// ComputeIndices is a client stream: a header naming the tensors, then their bytes in
// chunks, in the order of the header's specs.
function computeIndices(analysis, features, labels, orders) {
  return new Promise((resolve, reject) => {
    const call = analysis.ComputeIndices((err, res) => (err ? reject(err) : resolve(res)));
    call.write({
      header: {
        options: { orders },
        tensors: [
          { name: "features", dtype: "float64", shape: [features.length, features[0].length] },
          { name: "labels", dtype: "int64", shape: [labels.length] },
        ],
      },
    });
    const data = Buffer.concat([float64Bytes(features), int64Bytes(labels)]);
    for (let offset = 0; offset < data.length; offset += CHUNK) {
      call.write({ chunk: { offset, data: data.subarray(offset, offset + CHUNK) } });
    }
    call.end();
  });
}

async function main() {
  const [address, protoDir, dataPath] = process.argv.slice(2);
  if (!address || !protoDir || !dataPath) {
    console.error("usage: node client.js HOST:PORT PROTO_DIR DATA.json");
    process.exit(2);
  }
  const pkg = load(path.resolve(protoDir));
  const creds = grpc.credentials.createInsecure();
  const health = new pkg.grpc.health.v1.Health(address, creds);
  const analysis = new pkg.layerscope.v1.Analysis(address, creds);
  const { features, labels, orders = [1, 5] } = JSON.parse(fs.readFileSync(dataPath, "utf8"));

  const status = await check(health);
  const result = await computeIndices(analysis, features, labels, orders);
  console.log(JSON.stringify({
    health: status,
    task: result.task,
    n_samples: result.train.n_samples,
    si: result.train.si,
    high_order_si: result.train.high_order_si,
    classes: result.classes,
  }));
  health.close();
  analysis.close();
}

main().catch((err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});
