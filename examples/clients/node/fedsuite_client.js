#!/usr/bin/env node
// A fedsuite client in Node from the protos alone (loaded at run time, nothing generated): lists
// the parties, submits a horizontal FedAvg job on the demo's breast-cancer dataset, follows
// WatchJob to the end and exits 0 only if the job SUCCEEDED (1 with a one-line reason otherwise,
// 2 on bad arguments).
//
//   node examples/clients/node/fedsuite_client.js --coordinator 127.0.0.1:50051 \
//     --ca certs/ca.pem --cert certs/admin.pem --key certs/admin.key
//
// Every option can also come from the environment (FEDSUITE_COORDINATOR, FEDSUITE_CA, ...).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'protos');

class UsageError extends Error {}

function parseOptions(argv) {
  const env = (name, fallback) => process.env[`FEDSUITE_${name}`] ?? fallback;
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        coordinator: { type: 'string', default: env('COORDINATOR') },
        ca: { type: 'string', default: env('CA') },
        cert: { type: 'string', default: env('CERT') },
        key: { type: 'string', default: env('KEY') },
        'server-name': { type: 'string', default: env('SERVER_NAME', 'coordinator') },
        dataset: { type: 'string', default: env('DATASET', 'breast') },
        rounds: { type: 'string', default: env('ROUNDS', '3') },
        name: { type: 'string', default: env('JOB_NAME', 'node-client') },
        timeout: { type: 'string', default: env('TIMEOUT', '10') },
        'watch-timeout': { type: 'string', default: env('WATCH_TIMEOUT', '300') },
        protos: { type: 'string', default: env('PROTOS', PROTO_ROOT) },
      },
    }));
  } catch (error) {
    throw new UsageError(error.message);
  }
  const missing = ['coordinator', 'ca', 'cert', 'key'].filter((field) => values[field] === undefined);
  if (missing.length > 0) {
    throw new UsageError(`missing --${missing.join(', --')} (or FEDSUITE_${missing[0].toUpperCase()})`);
  }
  const number = (field) => {
    const value = Number(values[field]);
    if (!Number.isFinite(value) || value <= 0) throw new UsageError(`--${field} must be a positive number`);
    return value;
  };
  return { ...values, rounds: number('rounds'), timeout: number('timeout'), watchTimeout: number('watch-timeout') };
}

// Every .proto of fedsuite.v1; field names as written in the protos, enums as their names,
// int64 as strings (JavaScript numbers lose precision past 2^53).
function loadApi(protoRoot) {
  const directory = path.join(protoRoot, 'fedsuite', 'v1');
  const files = fs.readdirSync(directory).filter((file) => file.endsWith('.proto')).sort()
    .map((file) => path.join('fedsuite', 'v1', file));
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protoRoot], keepCase: true, enums: String, longs: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).fedsuite.v1;
}

// The coordinator's certificate names its node id, whatever address reaches it.
function connect(api, options) {
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(options.ca), fs.readFileSync(options.key), fs.readFileSync(options.cert));
  return new api.Coordinator(options.coordinator, credentials,
    { 'grpc.ssl_target_name_override': options['server-name'] });
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function unary(client, method, request, options) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline(options.timeout) }, (error, reply) => {
      if (error) reject(error); else resolve(reply);
    });
  });
}

async function listParties(client, options) {
  const parties = [];
  let token = '';
  do {
    const page = await unary(client, 'ListParties', { page_token: token }, options);
    parties.push(...page.parties);
    token = page.next_page_token;
  } while (token);
  return parties;
}

function horizontalJob(options) {
  return {
    name: options.name,
    horizontal: {
      dataset: options.dataset,
      model: { type: 'MODEL_TYPE_LOGISTIC_REGRESSION' },
      rounds: options.rounds, local_epochs: 1, batch_size: 16, learning_rate: 0.05,
      penalty: 'PENALTY_L2', alpha: 0.001, min_parties: 2, fraction: 1.0, seed: 42,
    },
  };
}

function describe(event) {
  let line = `event ${event.sequence} ${event.type} round=${event.round}/${event.total_rounds}`;
  if (event.metrics) line += ` train_loss=${event.metrics.train_loss.toFixed(4)}`;
  if (event.metrics?.eval) line += ` accuracy=${event.metrics.eval.accuracy.toFixed(4)}`;
  if (event.message) line += ` ${event.message}`;
  return line;
}

// A google.protobuf.Timestamp as proto-loader gives it: {seconds: int64 as a string, nanos}.
function unixSeconds(timestamp) {
  return Number(timestamp.seconds) + timestamp.nanos / 1e9;
}

function watch(client, jobId, options) {
  return new Promise((resolve, reject) => {
    const stream = client.WatchJob({ job_id: jobId }, { deadline: deadline(options.watchTimeout) });
    stream.on('data', (event) => console.log(describe(event)));
    stream.on('error', reject);
    stream.on('end', resolve);
  });
}

async function run(options) {
  const client = connect(loadApi(options.protos), options);
  try {
    for (const party of await listParties(client, options)) {
      const datasets = party.datasets.map((dataset) => dataset.name).join(',');
      console.log(`party ${party.party_id} ${party.role} online=${party.online} datasets=${datasets}`);
    }
    const { job_id: jobId } = await unary(client, 'SubmitJob', { spec: horizontalJob(options) }, options);
    console.log(`submitted ${jobId}`);
    await watch(client, jobId, options);
    const job = await unary(client, 'GetJob', { job_id: jobId }, options);
    const seconds = unixSeconds(job.updated_at) - unixSeconds(job.created_at);
    console.log(`job ${job.job_id} ${job.state} rounds=${job.current_round} seconds=${seconds.toFixed(3)}`);
    if (job.state !== 'JOB_STATE_SUCCEEDED') throw new Error(`job ${job.job_id} ended ${job.state}: ${job.reason}`);
  } finally {
    client.close();
  }
}

async function main() {
  try {
    await run(parseOptions(process.argv.slice(2)));
  } catch (error) {
    const status = typeof error.code === 'number' ? `${grpc.status[error.code]}: ${error.details}` : error.message;
    console.error(`error: ${status}`);
    process.exitCode = error instanceof UsageError || error.code === 'ENOENT' ? 2 : 1;
  }
}

main();
