// Package samples holds the scenarios of the Durable Functions custom
// status documentation, written for jetflow. The worker binary and the
// devserver host them.
package samples

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/worker"
)

// Register adds every sample orchestrator and activity to r.
func Register(r *worker.Registry) error {
	return errors.Join(
		r.AddOrchestrator("E1_HelloSequence", HelloSequence),
		r.AddActivity("E1_SayHello", SayHello),
		r.AddOrchestrator("CityRecommender", CityRecommender),
		r.AddOrchestrator("ReserveTicket", ReserveTicket),
		r.AddActivity("CalculateDiscount", CalculateDiscount),
		r.AddOrchestrator("SetStatusTest", SetStatusTest),
		r.AddActivity("SlowStep", SlowStep),
	)
}

// Cities are the stops of E1_HelloSequence, in order.
var Cities = []string{"Tokyo", "Seattle", "London"}

// HelloSequence says hello to three cities in turn and shows the last city
// greeted as its custom status.
func HelloSequence(ctx *replay.Context) (any, error) {
	var out []string
	for _, city := range Cities {
		var greeting string
		if err := ctx.CallActivity("E1_SayHello", city).Await(&greeting); err != nil {
			return nil, err
		}
		out = append(out, greeting)
		if err := ctx.SetCustomStatus(city); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SayHello greets a city.
func SayHello(_ context.Context, in worker.Input) (any, error) {
	var name string
	if err := in.Get(&name); err != nil {
		return nil, err
	}
	return "Hello " + name + "!", nil
}

// Recommendation is CityRecommender's custom status for a choice.
type Recommendation struct {
	RecommendedCities  []string `json:"recommendedCities"`
	RecommendedSeasons []string `json:"recommendedSeasons"`
}

// Recommendations maps a user's choice to its recommendation.
var Recommendations = map[int]Recommendation{
	1: {[]string{"Tokyo", "Seattle"}, []string{"Spring", "Summer"}},
	2: {[]string{"Seattle", "London"}, []string{"Summer"}},
	3: {[]string{"Tokyo", "London"}, []string{"Spring", "Summer"}},
}

// CityRecommender shows a recommendation for the user's choice, then waits
// for the user to select a city and shows the selection.
func CityRecommender(ctx *replay.Context) (any, error) {
	var choice int
	if err := ctx.GetInput(&choice); err != nil {
		return nil, err
	}
	rec, ok := Recommendations[choice]
	if !ok {
		return nil, fmt.Errorf("choice %d is not 1, 2 or 3", choice)
	}
	if err := ctx.SetCustomStatus(rec); err != nil {
		return nil, err
	}
	var selected json.RawMessage
	if err := ctx.WaitForExternalEvent("CitySelected").Await(&selected); err != nil {
		return nil, err
	}
	if err := ctx.SetCustomStatus(map[string]json.RawMessage{"selectedCity": selected}); err != nil {
		return nil, err
	}
	return selected, nil
}

// BookingURL is where ReserveTicket sends its users.
const BookingURL = "https://www.myawesomebookingweb.com"

// ReserveInput is ReserveTicket's input in object form; a plain JSON string
// is the user ID with the default timeout of 60 seconds.
type ReserveInput struct {
	UserID          string `json:"userId"`
	DiscountTimeout int    `json:"discountTimeout"`
}

// ReserveTicket offers a discount, tells the client how to book, and waits
// for the booking to be confirmed before the discount runs out.
func ReserveTicket(ctx *replay.Context) (any, error) {
	in := ReserveInput{DiscountTimeout: 60}
	var userID string
	if err := ctx.GetInput(&userID); err != nil {
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		if in.DiscountTimeout <= 0 {
			in.DiscountTimeout = 60
		}
	} else {
		in.UserID = userID
	}
	var discount int
	if err := ctx.CallActivity("CalculateDiscount", in.UserID).Await(&discount); err != nil {
		return nil, err
	}
	if err := ctx.SetCustomStatus(map[string]any{
		"discount": discount, "discountTimeout": in.DiscountTimeout, "bookingUrl": BookingURL,
	}); err != nil {
		return nil, err
	}
	var confirmed bool
	err := ctx.WaitForExternalEvent("BookingConfirmed", replay.WithTimeout(time.Duration(in.DiscountTimeout)*time.Second)).Await(&confirmed)
	if err != nil && !errors.Is(err, replay.ErrTimeout) {
		return nil, err
	}
	msg := "The booking was not confirmed on time. Please try again."
	if confirmed {
		msg = "Thank you for confirming your booking."
	}
	if err := ctx.SetCustomStatus(map[string]string{"message": msg}); err != nil {
		return nil, err
	}
	return confirmed, nil
}

// CalculateDiscount derives a discount from the user ID: the same ID always
// gets the same discount, between 5 and 24 percent.
func CalculateDiscount(_ context.Context, in worker.Input) (any, error) {
	var userID string
	if err := in.Get(&userID); err != nil {
		return nil, err
	}
	sum := 0
	for i := 0; i < len(userID); i++ {
		sum += int(userID[i])
	}
	return 5 + sum%20, nil
}

// NextActions is the custom status SetStatusTest shows while it works.
var NextActions = map[string]any{"nextActions": []string{"A", "B", "C"}, "foo": 2}

// SetStatusTest sets a custom status, then works for a few seconds (a
// durable timer, by default 3 s; the input may give other seconds) and a
// short activity, then completes.
func SetStatusTest(ctx *replay.Context) (any, error) {
	if err := ctx.SetCustomStatus(NextActions); err != nil {
		return nil, err
	}
	seconds := 3.0
	_ = ctx.GetInput(&seconds)
	if err := ctx.CreateTimer(time.Duration(seconds * float64(time.Second))).Await(nil); err != nil {
		return nil, err
	}
	var out string
	if err := ctx.CallActivity("SlowStep", "B").Await(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// SlowStep stands for real work.
func SlowStep(_ context.Context, in worker.Input) (any, error) {
	var step string
	_ = in.Get(&step)
	return "did " + step, nil
}
