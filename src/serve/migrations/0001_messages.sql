-- Conversations: every message in order. `seq` is the event id SSE clients resume from;
-- `id` is the public id (and the idempotency key the message is sent to its agent with).
CREATE TABLE messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL,
    thread     TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('user', 'agent', 'system')),
    sender     TEXT,
    text       TEXT NOT NULL,
    -- agent and system messages: the user message they answer
    reply_to   TEXT,
    -- user messages: 'pending' until answered (by the agent, or by a system message), then 'done'
    state      TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX messages_by_thread ON messages (agent, thread, seq);
CREATE INDEX messages_by_agent ON messages (agent, seq);
CREATE INDEX messages_pending ON messages (state) WHERE state = 'pending';
CREATE UNIQUE INDEX one_answer_per_message ON messages (reply_to) WHERE reply_to IS NOT NULL;
