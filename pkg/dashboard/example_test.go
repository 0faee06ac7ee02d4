package dashboard_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/dashboard"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
)

// Serve the dashboard of the fleet at NATS_URL on 127.0.0.1:8088, with the
// cancel and replay buttons behind basic auth. (It needs a running fleet,
// so it has no Output and is only compiled.)
func Example() {
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	store, err := jobstore.Open(context.Background(), js, jobstore.Settings{})
	if err != nil {
		log.Fatal(err)
	}
	h, err := dashboard.New(dashboard.Options{
		JS: js, Store: store,
		AllowActions: true, User: os.Getenv("UI_USER"), Password: os.Getenv("UI_PASSWORD"),
		WebhookSecret: os.Getenv("WEBHOOK_SECRET"),
		Logger:        zerolog.New(os.Stderr).With().Timestamp().Logger(),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:8088", Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
