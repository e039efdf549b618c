#!/usr/bin/env node
// A Node.js client of movie-embeddings, built only from the contract in protos/.
//
// It shows that a non-Python gRPC stack (@grpc/grpc-js with @grpc/proto-loader)
// can call every RPC of movie_embeddings.v1.MovieEmbeddingService, and prints
// what it got as ONE JSON object on stdout for tests/e2e/test_node_interop.py
// to check against the Python SDK on the same server.
//
// Usage: node tests/interop/client.js HOST:PORT
// Exit status: 0 when every call behaved as expected, 1 otherwise (the reason
// goes to stderr), 2 on bad usage.
//
// What the JSON looks like: proto-loader's object form of each response, with
// the options below. Field names are lowerCamelCase (movieId, numMovies), int64
// and uint64 (ModelRef.version, SyntheticData.seed) are decimal strings, enums
// are their names ("MODEL_STATE_READY"), unset fields hold their defaults, a
// set oneof also names its member (TrainResponse.event = "progress" | "model"),
// and float fields are the float32 values as JS numbers. JSON has no NaN:
// TrainProgress.valLoss (NaN without a validation split) is printed as null.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_PATH = path.join(
  __dirname, '../../protos/movie_embeddings/v1/movie_embeddings.proto');
const LOADER_OPTIONS = {
  keepCase: false, // lowerCamelCase field names, as in proto3 JSON
  longs: String, // int64/uint64 as strings: no precision lost
  enums: String, // enum values by name
  defaults: true, // unset fields present, with their default values
  oneofs: true, // a oneof's name holds the name of its set member
  includeDirs: [path.join(__dirname, '../../protos')],
};

const QUERY_DEADLINE_MS = 30 * 1000; // every query RPC
const TRAIN_DEADLINE_MS = 90 * 1000; // the Train stream, from start to last message
const TRAIN_MODEL = 'nodemodel';
const DATASET = 'nodedata'; // what it imports: 40 watchers x 12 movies with titles
const DATASET_MODEL = 'nodedatamodel';

// A deadline `ms` milliseconds from now, for a call's options.
function deadline(ms) {
  return { deadline: new Date(Date.now() + ms) };
}

// A unary call as a promise: resolves with the response, rejects with the
// ServiceError (which has .code, .details and .metadata).
function unary(client, method, request, ms = QUERY_DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    client[method](request, deadline(ms), (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

// A server-streaming call as a promise of every message, in order.
function collect(client, method, request, ms) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = client[method](request, deadline(ms));
    call.on('data', (message) => messages.push(message));
    call.on('error', reject); // a failed stream ends with 'error', not 'end'
    call.on('end', () => resolve(messages));
  });
}

// A client-streaming call as a promise of its one response: writes every message, then ends.
function stream(client, method, messages, ms = QUERY_DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    const call = client[method](deadline(ms), (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
    for (const message of messages) call.write(message);
    call.end();
  });
}

// The small dataset it imports: movie ids 10, 20, ..., 120 (a dataset's own ids, not rows);
// watcher w likes the 6 movies of its half (w % 2) and rates the others 1 star.
function datasetMessages() {
  const movieIds = Array.from({ length: 12 }, (_, i) => 10 * (i + 1));
  const titles = movieIds.map((m) => `Film ${m} (2001)`);
  titles[0] = 'Misérables, Les (1995)';
  const ratings = { watcherIds: [], movieIds: [], ratings: [] };
  for (let w = 0; w < 40; w += 1) {
    movieIds.forEach((m, i) => {
      ratings.watcherIds.push(String(w)); // int64 as a string
      ratings.movieIds.push(m);
      ratings.ratings.push(Math.floor(i / 6) === w % 2 ? 5 : 1);
    });
  }
  return [
    { header: { name: DATASET, description: 'made by client.js' } },
    { movies: { movieIds, titles, genres: movieIds.map(() => 'Drama|War') } },
    { ratings },
  ];
}

// A call that must fail: resolves with its status, rejects if it succeeded.
async function expectError(promise) {
  try {
    const response = await promise;
    throw new Error(`expected an error, got ${JSON.stringify(response)}`);
  } catch (err) {
    if (err.code === undefined) throw err; // not a gRPC status: our own failure
    return { code: err.code, codeName: grpc.status[err.code], details: err.details };
  }
}

async function main(target) {
  const definition = protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
  const v1 = grpc.loadPackageDefinition(definition).movie_embeddings.v1;
  const client = new v1.MovieEmbeddingService(target, grpc.credentials.createInsecure());
  try {
    const results = {};
    // Queries on the newest version of "default" (the `model` field left unset).
    results.getMovieVector = await unary(client, 'GetMovieVector', { movieId: 3 });
    results.batchGetMovieVectors = await unary(client, 'BatchGetMovieVectors', {
      movieIds: [3, 0, 79],
    });
    results.nearestMovies = await unary(client, 'NearestMovies', { movieId: 3, k: 5 });
    results.reconstruct = await unary(client, 'Reconstruct', {
      watchers: [{ likedMovieIds: [0, 1, 2], ageYears: 30, education: 1 }],
      topK: 3,
    });
    // The top 3 alone, without every movie's probability.
    results.reconstructTopK = await unary(client, 'Reconstruct', {
      watchers: [{ likedMovieIds: [0, 1, 2], ageYears: 30, education: 1 }],
      topK: 3,
      recommendationsOnly: true,
    });
    // The whole catalogue's vectors as a server stream of pages.
    results.streamMovieVectors = await collect(client, 'StreamMovieVectors', { pageSize: 30 },
      QUERY_DEADLINE_MS);
    // A small training of a new model: every streamed message, in order.
    results.train = await collect(client, 'Train', {
      modelName: TRAIN_MODEL,
      synthetic: { numWatchers: 200, seed: '7' }, // uint64 given as a string
      training: { epochs: 3 },
    }, TRAIN_DEADLINE_MS);
    // After the training, so that the new model is listed too.
    results.listModels = await unary(client, 'ListModels', {});
    results.getModel = await unary(client, 'GetModel', { model: { name: 'default' } });
    // An error: movie 999 is beyond the catalogue of 80 movies -> NOT_FOUND (5).
    results.notFound = await expectError(unary(client, 'GetMovieVector', { movieId: 999 }));
    // Users' own data: import, list, describe, train on it, search by title, query by own ids.
    results.importDataset = await stream(client, 'ImportDataset', datasetMessages());
    results.listDatasets = await unary(client, 'ListDatasets', { name: DATASET });
    results.getDataset = await unary(client, 'GetDataset', { dataset: { name: DATASET } });
    results.trainDataset = await collect(client, 'Train', {
      modelName: DATASET_MODEL,
      dataset: { dataset: { name: DATASET }, minLikesPerWatcher: 1, holdoutFraction: 0.1, seed: '3' },
      training: { epochs: 2, embeddingDim: 4, hiddenUnits: 8 },
    }, TRAIN_DEADLINE_MS);
    const model = { name: DATASET_MODEL };
    results.searchMovies = await unary(client, 'SearchMovies', { model, query: 'miserables' });
    results.datasetNearest = await unary(client, 'NearestMovies', { model, movieId: 10, k: 3 });
    results.badImport = await expectError(stream(client, 'ImportDataset', [
      { header: { name: 'nodebad' } },
      { ratings: { watcherIds: ['1', '2'], movieIds: [5, -7], ratings: [4, 4] } },
    ]));
    results.deleteDataset = await unary(client, 'DeleteDataset', { dataset: { name: DATASET } });
    return results;
  } finally {
    client.close();
  }
}

if (require.main === module) {
  const target = process.argv[2];
  if (!target) {
    console.error('usage: node client.js HOST:PORT');
    process.exit(2);
  }
  main(target).then(
    (results) => {
      process.stdout.write(JSON.stringify(results) + '\n');
    },
    (err) => {
      console.error(`interop client failed: ${err.stack || err}`);
      if (err.code !== undefined) console.error(`gRPC status ${err.code}: ${err.details}`);
      process.exitCode = 1;
    },
  );
}
