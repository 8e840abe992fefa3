// A small client of the graphql-transport-ws protocol (the one graphql-ws speaks), for
// punchcard's subscriptions on ws(s)://<this host>/graphql.
//
// It keeps one socket and reconnects by itself: after a drop (server restart, network
// gone, laptop asleep) it waits with exponential backoff and jitter, opens a new socket,
// and subscribes again to everything with the variables each subscription gives *then*:
// its resume point (afterRevision / after: the last cursor seen), so the server sends
// exactly what was missed. A ping every 15 s that gets no answer in 10 s closes a socket
// that died silently (sleep, a dropped Wi-Fi), and so does a connection not acknowledged
// within 10 s; coming back online or to the tab reconnects at once instead of waiting out
// the backoff.
//
//   const live = new LiveSocket({ url, token, onState, onFatal });
//   const stop = live.subscribe(query, () => ({ id, after: lastCursor }), { next, error });
"use strict";

const PING_EVERY_MS = 15000;
const PONG_WITHIN_MS = 10000;
const ACK_WITHIN_MS = 10000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
// Close codes after which trying again cannot help: the token is bad or expired.
const FATAL = { 4401: "Your token has expired: paste a new one.", 4403: "The token was refused." };

class LiveSocket {
  constructor({ url, token, onState = () => {}, onFatal = () => {} }) {
    this.url = url;
    this.token = token;
    this.onState = onState;
    this.onFatal = onFatal;
    this.subscriptions = new Map(); // id -> { query, variables(), next, error }
    this.nextId = 1;
    this.attempt = 0;
    this.ws = null;
    this.acked = false;
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.answerTimer = null;
    this.wake = () => this.reconnectNow();
    window.addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", this.onVisible = () => {
      if (document.visibilityState === "visible") this.checkAlive();
    });
    this.connect();
  }

  subscribe(query, variables, { next, error = () => {} }) {
    const id = String(this.nextId++);
    this.subscriptions.set(id, { query, variables, next, error });
    if (this.acked) this.sendSubscribe(id);
    return () => {
      if (this.subscriptions.delete(id) && this.acked) this.send({ id, type: "complete" });
    };
  }

  close() {
    this.stopped = true;
    window.removeEventListener("online", this.wake);
    document.removeEventListener("visibilitychange", this.onVisible);
    clearTimeout(this.retryTimer);
    this.stopHeartbeat();
    if (this.ws) this.ws.close(1000, "bye");
  }

  // --- the socket -------------------------------------------------------------------

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.acked = false;
    this.onState("connecting");
    const ws = (this.ws = new WebSocket(this.url, "graphql-transport-ws"));
    clearTimeout(this.answerTimer);
    this.answerTimer = setTimeout(() => this.abandon(ws), ACK_WITHIN_MS); // a hung handshake
    ws.onopen = () => {
      this.send({ type: "connection_init", payload: { Authorization: "Bearer " + this.token } });
    };
    ws.onmessage = (event) => {
      if (ws === this.ws) this.receive(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this.closed(event);
    };
  }

  receive(message) {
    clearTimeout(this.answerTimer); // any message shows the socket is alive
    switch (message.type) {
      case "connection_ack":
        this.acked = true;
        this.attempt = 0;
        this.onState("live");
        this.startHeartbeat();
        for (const id of this.subscriptions.keys()) this.sendSubscribe(id);
        break;
      case "next": {
        const sub = this.subscriptions.get(message.id);
        if (sub && message.payload.errors) sub.error(message.payload.errors);
        else if (sub) sub.next(message.payload.data);
        break;
      }
      case "error": {
        const sub = this.subscriptions.get(message.id);
        this.subscriptions.delete(message.id);
        if (sub) sub.error(message.payload);
        break;
      }
      case "complete":
        this.subscriptions.delete(message.id);
        break;
      case "ping":
        this.send({ type: "pong" });
        break;
      default: // "pong" and anything newer
    }
  }

  closed(event) {
    this.acked = false;
    this.stopHeartbeat();
    if (this.stopped) return;
    if (FATAL[event.code]) {
      this.stopped = true;
      this.onState("closed");
      this.onFatal(FATAL[event.code], event.code);
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this.onState("offline", delay);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState === WebSocket.CONNECTING)) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return this.checkAlive();
    this.attempt = 0;
    this.connect();
  }

  // A ping, and a close if nothing comes back: a socket that died while the machine
  // slept still looks open until something is sent on it.
  checkAlive() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return this.reconnectNow();
    this.send({ type: "ping" });
    clearTimeout(this.answerTimer);
    const ws = this.ws;
    this.answerTimer = setTimeout(() => this.abandon(ws), PONG_WITHIN_MS);
  }

  // Give up on a socket that stopped answering: close it and retry as after a drop.
  abandon(ws) {
    if (ws !== this.ws) return;
    ws.onclose = null;
    ws.close();
    this.closed({ code: 1006 });
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.pingTimer = setInterval(() => this.checkAlive(), PING_EVERY_MS);
  }

  stopHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.answerTimer);
  }

  sendSubscribe(id) {
    const sub = this.subscriptions.get(id);
    const payload = { query: sub.query, variables: sub.variables() };
    this.send({ id, type: "subscribe", payload });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }
}

window.LiveSocket = LiveSocket;
