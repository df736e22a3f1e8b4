package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// TestE1HelloSequence is the documentation's HttpStart sample: start the
// orchestration, poll its status until the custom status is "London", then
// read the output. The custom status only moves forward through the cities.
func TestE1HelloSequence(t *testing.T) {
	s := startStack(t)
	id := s.start(t, "E1_HelloSequence", "", "")
	cities := []string{"Tokyo", "Seattle", "London"}
	last := -1
	st := s.await(t, id, `customStatus "London"`, func(st statusBody) bool {
		if string(st.CustomStatus) != "null" {
			var city string
			if err := json.Unmarshal(st.CustomStatus, &city); err != nil {
				t.Fatalf("custom status %s is not a string", st.CustomStatus)
			}
			i := slices.Index(cities, city)
			if i < last {
				t.Fatalf("custom status went back from %s to %s", cities[last], city)
			}
			last = i
		}
		return jsonEq(t, st.CustomStatus, `"London"`)
	})
	if st.RuntimeStatus != "Completed" {
		st = s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
	}
	if !jsonEq(t, st.Output, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`) {
		t.Errorf("output = %s", st.Output)
	}
	if st.Name != "E1_HelloSequence" || st.InstanceID != id {
		t.Errorf("name %q id %q", st.Name, st.InstanceID)
	}
	if !jsonEq(t, st.CustomStatus, `"London"`) {
		t.Errorf("custom status after completion = %s, want \"London\"", st.CustomStatus)
	}
}

func TestCityRecommender(t *testing.T) {
	s := startStack(t)
	want := map[int]string{
		1: `{"recommendedCities":["Tokyo","Seattle"],"recommendedSeasons":["Spring","Summer"]}`,
		2: `{"recommendedCities":["Seattle","London"],"recommendedSeasons":["Summer"]}`,
		3: `{"recommendedCities":["Tokyo","London"],"recommendedSeasons":["Spring","Summer"]}`,
	}
	selected := map[int]string{1: "Tokyo", 2: "London", 3: "Tokyo"}
	for choice := 1; choice <= 3; choice++ {
		id := fmt.Sprintf("city-%d", choice)
		s.start(t, "CityRecommender", id, fmt.Sprint(choice))
		st := s.await(t, id, "recommendation", func(st statusBody) bool { return jsonEq(t, st.CustomStatus, want[choice]) })
		if st.RuntimeStatus != "Running" {
			t.Fatalf("%s: %s while waiting for the selection", id, st.RuntimeStatus)
		}
		city := fmt.Sprintf("%q", selected[choice])
		r := do(t, http.MethodPost, s.base+"instances/"+id+"/raiseEvent/CitySelected", "application/json", []byte(city))
		if r.code != http.StatusAccepted {
			t.Fatalf("raise: %d %s", r.code, r.body)
		}
		st = s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
		if !jsonEq(t, st.CustomStatus, `{"selectedCity":`+city+`}`) || !jsonEq(t, st.Output, city) {
			t.Errorf("%s: custom status %s output %s", id, st.CustomStatus, st.Output)
		}
		if !jsonEq(t, st.Input, fmt.Sprint(choice)) {
			t.Errorf("%s: input %s", id, st.Input)
		}
		// A finished instance takes no more events.
		if r := do(t, http.MethodPost, s.base+"instances/"+id+"/raiseEvent/CitySelected", "application/json", []byte(city)); r.code != http.StatusGone {
			t.Errorf("raise on a finished instance: %d, want 410", r.code)
		}
	}
}

func TestReserveTicket(t *testing.T) {
	s := startStack(t)
	const (
		thanks = `{"message":"Thank you for confirming your booking."}`
		late   = `{"message":"The booking was not confirmed on time. Please try again."}`
	)
	// CalculateDiscount's value for a user ID, as the sample computes it.
	discount := func(user string) int {
		sum := 0
		for i := 0; i < len(user); i++ {
			sum += int(user[i])
		}
		return 5 + sum%20
	}
	offer := func(user string, timeout int) string {
		return fmt.Sprintf(`{"discount":%d,"discountTimeout":%d,"bookingUrl":"https://www.myawesomebookingweb.com"}`, discount(user), timeout)
	}
	cases := []struct {
		id, input, user string
		timeout         int
		event           string // "" raises nothing
		wantStatus      string
		wantOutput      string
	}{
		{"book-yes", `{"userId":"alice","discountTimeout":30}`, "alice", 30, "true", thanks, "true"},
		{"book-no", `{"userId":"bob","discountTimeout":30}`, "bob", 30, "false", late, "false"},
		{"book-late", `{"userId":"carol","discountTimeout":1}`, "carol", 1, "", late, "false"},
		// A plain string is the user ID and keeps the 60 s timeout.
		{"book-plain", `"dave"`, "dave", 60, "true", thanks, "true"},
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			t.Parallel()
			s.start(t, "ReserveTicket", c.id, c.input)
			st := s.await(t, c.id, "the offer", func(st statusBody) bool {
				return st.RuntimeStatus == "Running" && jsonEq(t, st.CustomStatus, offer(c.user, c.timeout))
			})
			_ = st
			if c.event != "" {
				r := do(t, http.MethodPost, s.base+"instances/"+c.id+"/raiseEvent/BookingConfirmed", "application/json", []byte(c.event))
				if r.code != http.StatusAccepted {
					t.Fatalf("raise: %d %s", r.code, r.body)
				}
			}
			st = s.await(t, c.id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
			if !jsonEq(t, st.CustomStatus, c.wantStatus) || !jsonEq(t, st.Output, c.wantOutput) {
				t.Errorf("custom status %s output %s, want %s and %s", st.CustomStatus, st.Output, c.wantStatus, c.wantOutput)
			}
		})
	}
}

// TestSetStatusTest: while the orchestration works, GET shows Running
// together with the custom status; it is kept after completion.
func TestSetStatusTest(t *testing.T) {
	s := startStack(t)
	const want = `{"nextActions":["A","B","C"],"foo":2}`
	id := s.start(t, "SetStatusTest", "status-test", "2")
	st := s.await(t, id, "custom status", func(st statusBody) bool { return string(st.CustomStatus) != "null" })
	if st.RuntimeStatus != "Running" || !jsonEq(t, st.CustomStatus, want) {
		t.Fatalf("while working: %s with custom status %s, want Running with %s", st.RuntimeStatus, st.CustomStatus, want)
	}
	st = s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
	if !jsonEq(t, st.CustomStatus, want) || !jsonEq(t, st.Output, `"did B"`) {
		t.Errorf("after completion: custom status %s output %s", st.CustomStatus, st.Output)
	}
}
