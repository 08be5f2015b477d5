// A chat room on Warren's STOMP-over-WebSocket endpoint. Every page subscribes to /topic/chat,
// which rides the amq.topic exchange with routing key `chat`, so MQTT clients on topic `chat`
// and AMQP queues bound to amq.topic with key `chat` share the room.
//
// Query string: ?broker=ws://127.0.0.1:15672/ws&name=alice (both optional).
'use strict';

const DESTINATION = '/topic/chat';

const params = new URLSearchParams(location.search);
const brokerURL = params.get('broker') || `ws://${location.hostname || '127.0.0.1'}:15672/ws`;

const form = document.getElementById('chat');
const nameInput = document.getElementById('name');
const textInput = document.getElementById('text');
const sendButton = document.getElementById('send');
const messageList = document.getElementById('messages');
const statusLine = document.getElementById('status');

nameInput.value = params.get('name') || '';

function setConnected(connected, detail) {
  // Tests wait on this attribute: <body data-connected="true">.
  document.body.dataset.connected = String(connected);
  sendButton.disabled = !connected;
  statusLine.textContent = detail;
}

function showMessage(name, text) {
  const item = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'name';
  who.textContent = name;
  const what = document.createElement('span');
  what.className = 'text';
  what.textContent = text;
  item.append(who, what);
  messageList.append(item);
}

// Bodies from other protocols need not be our JSON; show them raw rather than drop them.
function onMessage(frame) {
  try {
    const message = JSON.parse(frame.body);
    showMessage(String(message.name ?? '?'), String(message.text ?? ''));
  } catch {
    showMessage('?', frame.body);
  }
}

const client = new StompJs.Client({
  brokerURL,
  connectHeaders: { login: 'guest', passcode: 'guest', host: '/' },
  reconnectDelay: 2000,
  onConnect() {
    client.subscribe(DESTINATION, onMessage);
    setConnected(true, `connected to ${brokerURL}`);
  },
  onWebSocketClose() {
    setConnected(false, `disconnected from ${brokerURL}; retrying…`);
  },
  onStompError(frame) {
    setConnected(false, `broker error: ${frame.headers.message || frame.body}`);
  },
});

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (!text || !client.connected) return;
  client.publish({
    destination: DESTINATION,
    body: JSON.stringify({ name: nameInput.value.trim() || 'anonymous', text }),
    headers: { 'content-type': 'application/json' },
  });
  textInput.value = '';
  textInput.focus();
});

client.activate();
