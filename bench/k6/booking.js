// The seed's last k6 script (shared/seed.md), with host names from the environment and a
// choice of load profiles. Thresholds, checks, setup and the VU loop are the seed's.
//
//   k6 run bench/k6/booking.js                                   # PROFILE=load
//   k6 run -e PROFILE=stress bench/k6/booking.js                 # load | stress | spike | smoke | closed
//   k6 run -e PROFILE=closed -e DURATION=60s -e VUS=64 bench/k6/booking.js
//   k6 run -e GATEWAY_URL=http://host:3005 -e AUTH_URL=... -e FLIGHTS_URL=... bench/k6/booking.js
//
// Changes from the seed, each needed to run it anywhere or to keep it from failing itself:
// - AUTH_URL, FLIGHTS_URL, GATEWAY_URL instead of the docker host names;
// - flight times: the seed's schedule (one departure an hour from 10 October, two hours
//   long) written as strict ISO 8601 (the seed writes "T9:00:00Z" and "T25:00:00Z", which
//   Airbourne accepts as well) and moved to next year, so that departures and their
//   reminders lie in the future, as they did when the seed ran;
// - randStr draws from a wider range: the seed's 100000 values gave 50 flight numbers and
//   50 e-mails a few per cent chance of a clash, that is a failed setup request;
// - setup stops the test if a flight or a user could not be created, instead of booking
//   `undefined`;
// - setupTimeout 2m: 50 sign-ups and sign-ins hash 100 passwords one after another.
// bench/profiles.py holds the same profiles for the Python runner (python -m bench.scenario).

import http from "k6/http";
import { check, fail, sleep } from "k6";

const FLIGHTS_URL = __ENV.FLIGHTS_URL || "http://127.0.0.1:3002";
const SERVER_URL = __ENV.AUTH_URL || "http://127.0.0.1:3001";
const API_GATEWAY = __ENV.GATEWAY_URL || "http://127.0.0.1:3005";
const PROFILE = __ENV.PROFILE || "load";
const DURATION = /^\d+(\.\d+)?$/.test(__ENV.DURATION || "") ? `${__ENV.DURATION}s` : __ENV.DURATION || "60s";
const THINK = PROFILE !== "closed";

const PROFILES = {
  load: {
    stages: [
      { duration: "30s", target: 20 },
      { duration: "1m", target: 20 },
      { duration: "30s", target: 50 },
      { duration: "1m", target: 50 },
      { duration: "30s", target: 100 },
      { duration: "1m", target: 100 },
      { duration: "30s", target: 0 },
    ],
  },
  stress: {
    stages: [
      { duration: "30s", target: 100 },
      { duration: "1m", target: 100 },
      { duration: "30s", target: 300 },
      { duration: "1m", target: 300 },
      { duration: "30s", target: 500 },
      { duration: "1m", target: 500 },
      { duration: "30s", target: 0 },
    ],
  },
  spike: {
    stages: [
      { duration: "10s", target: 50 },
      { duration: "30s", target: 50 },
      { duration: "10s", target: 500 },
      { duration: "1m", target: 500 },
      { duration: "10s", target: 50 },
      { duration: "30s", target: 50 },
      { duration: "10s", target: 0 },
    ],
  },
  smoke: { vus: 2, duration: "3s" },
  closed: { vus: parseInt(__ENV.VUS || "64", 10), duration: DURATION },
};

if (!(PROFILE in PROFILES)) {
  throw new Error(`PROFILE must be one of ${Object.keys(PROFILES).join(", ")}, got ${PROFILE}`);
}

export const options = Object.assign(
  {
    thresholds: {
      "http_req_duration{operation:login}": ["p(95)<300"],
      "http_req_duration{operation:booking}": ["p(95)<2000", "p(99)<5000"],
      "http_req_duration{operation:setup}": ["p(95)<500"],
      "http_req_failed{operation:booking}": ["rate<0.05"],
      "checks{check:booking_success}": ["rate>0.95"],
    },
    setupTimeout: "2m",
  },
  PROFILES[PROFILE]
);

function randStr(prefix) {
  return `${prefix}_${Math.random().toString(36).slice(2, 10)}`;
}

function iso(date) {
  return date.toISOString().replace(".000Z", "Z");
}

function post(url, body, tags, headers) {
  return http.post(url, JSON.stringify(body), {
    headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
    tags: tags,
  });
}

const SETUP = { operation: "setup" };

export function setup() {
  console.log("Creating cities...");
  const city1 = post(`${FLIGHTS_URL}/api/v1/city`, { name: randStr("City") }, SETUP);
  const city2 = post(`${FLIGHTS_URL}/api/v1/city`, { name: randStr("City") }, SETUP);
  const city1Id = JSON.parse(city1.body)?.data?.id;
  const city2Id = JSON.parse(city2.body)?.data?.id;
  console.log(`City IDs: ${city1Id}, ${city2Id}`);

  console.log("Creating airports...");
  const depAirport = post(
    `${FLIGHTS_URL}/api/v1/airports`,
    { name: randStr("DepAirport"), address: randStr("Address"), cityId: city1Id },
    SETUP
  );
  const departureAirportId = JSON.parse(depAirport.body)?.data?.id;
  const arrAirport = post(
    `${FLIGHTS_URL}/api/v1/airports`,
    { name: randStr("ArrAirport"), address: randStr("Address"), cityId: city2Id },
    SETUP
  );
  const arrivalAirportId = JSON.parse(arrAirport.body)?.data?.id;
  console.log(`Airport IDs: ${departureAirportId}, ${arrivalAirportId}`);

  console.log("Creating airplane...");
  const airplane = post(
    `${FLIGHTS_URL}/api/v1/airplane`,
    { modelNumber: randStr("Boeing"), capacity: 100000 },
    SETUP
  );
  const airplaneId = JSON.parse(airplane.body)?.data?.id;
  console.log(`Airplane ID: ${airplaneId}`);

  const year = new Date().getUTCFullYear() + 1;
  let flightIds = [];
  console.log("Creating flights...");
  for (let i = 0; i < 50; i++) {
    const departure = new Date(Date.UTC(year, 9, 10, i));
    const arrival = new Date(departure.getTime() + 2 * 3600 * 1000);
    const flightBody = {
      flightNumber: randStr("FN"),
      airplaneId,
      departureAirportID: departureAirportId,
      arrivalAirportId,
      departureTime: iso(departure),
      arrivalTime: iso(arrival),
      price: 5000 + i * 100,
      boardingGate: randStr("Gate"),
    };
    const flight = post(`${FLIGHTS_URL}/api/v1/flights`, flightBody, SETUP);
    flightIds.push(JSON.parse(flight.body)?.data?.id);
  }

  let userData = [];
  console.log("Creating test users...");
  for (let i = 0; i < 50; i++) {
    const email = `${randStr("user")}@test.com`;
    const password = "password123";
    post(`${SERVER_URL}/api/v1/signup`, { email, password }, SETUP);
    const loginRes = post(`${SERVER_URL}/api/v1/signin`, { email, password }, { operation: "login" });
    let parsed;
    try {
      parsed = JSON.parse(loginRes.body);
    } catch (e) {
      console.error("Login JSON parse failed", loginRes.body);
      return;
    }
    userData.push({ token: parsed.data?.token, userId: parsed.data?.id });
  }

  if (flightIds.some((id) => id === undefined) || userData.some((user) => !user.token)) {
    fail(`setup: ${flightIds.filter((id) => id === undefined).length} flights and ` +
         `${userData.filter((user) => !user.token).length} users could not be created`);
  }
  return { flightIds, userData };
}

export default function (data) {
  const user = data.userData[Math.floor(Math.random() * data.userData.length)];

  const numBookings = 1 + Math.floor(Math.random() * 3);

  for (let i = 0; i < numBookings; i++) {
    const bookingPayload = {
      flightId: data.flightIds[Math.floor(Math.random() * data.flightIds.length)],
      userId: user.userId,
      NoOfSeats: 1 + Math.floor(Math.random() * 4),
    };

    const res = post(
      `${API_GATEWAY}/bookingservice/api/v1/bookings`,
      bookingPayload,
      { operation: "booking" },
      { "x-access-token": user.token }
    );

    check(
      res,
      {
        booking_success: (r) => r.status === 200 || r.status === 201,
        booking_fast: (r) => r.timings.duration < 1000,
        booking_no_timeout: (r) => r.status !== 0,
      },
      { check: "booking_success" }
    );

    if (THINK && i < numBookings - 1) {
      sleep(0.3);
    }
  }
  if (THINK) {
    sleep(1 + Math.random() * 2);
  }
}
