/* Keeping one execution live: events in seq order over the websocket, snapshots from the server.

   The server owns every state. An event shows in the activity log at once and asks for a fresh
   snapshot (Console.Refresher: one request at a time, at most one per REFRESH_GAP_MS, and always
   one more after the last event); the page renders only snapshots. A seq gap asks the server to
   resume from the last seq seen; the consumer replays from the database. A snapshot never
   replaces a newer one, and one read before the latest event is fetched again.

   body[data-event-seq] and body[data-snapshot-seq] say how far the page has got,
   body[data-events-ignored] how many repeated events it dropped, body[data-resumed-from] the seq
   it last asked to resume from (signals the tests wait on). */

const {LiveSocket, Refresher} = Console;

const REFRESH_GAP_MS = 300;

export function followExecution({socketUrl, snapshotUrl, eventSeq, snapshotSeq, onEvent, onProgress, onSnapshot}) {
  let lastEvent = eventSeq;
  let shown = snapshotSeq;
  let ignored = 0;
  const mark = () => {
    document.body.dataset.eventSeq = String(lastEvent);
    document.body.dataset.snapshotSeq = String(shown);
    document.body.dataset.eventsIgnored = String(ignored);
  };

  const refresher = new Refresher(() => snapshotUrl, (snapshot) => {
    if (snapshot.last_seq < shown) return;  // older than what is shown: never step back
    shown = snapshot.last_seq;
    if (shown < lastEvent) refresher.request();  // read before an event we have: read again
    onSnapshot(snapshot);
    mark();
  }, {minGapMs: REFRESH_GAP_MS});

  const socket = new LiveSocket(() => `${socketUrl}?after=${lastEvent}`, {
    onMessage: (message) => {
      if (message.kind === "event") {
        const event = message.event;
        if (event.seq > lastEvent + 1) {
          socket.send({resume: lastEvent});  // a gap: the server replays from the database
          document.body.dataset.resumedFrom = String(lastEvent);
        } else if (event.seq === lastEvent + 1) {
          lastEvent = event.seq;
          onEvent(event);
          refresher.request();
        } else {
          ignored += 1;  // a repeat of an event we have
        }
        mark();
      } else if (message.kind === "progress") {
        onProgress(message.progress);
      } else if (message.kind === "synced") {
        refresher.request();  // after a (re)connect: anything else changed?
      }
    },
  });

  mark();
  if (shown < lastEvent) refresher.request();
}
