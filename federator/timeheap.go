package federator

import "time"

// timed is an element of a timeHeap: it has a time and knows its place in
// the heap (for heap.Fix and heap.Remove).
type timed interface {
	dueAt() time.Time
	setIndex(i int) // -1: not in the heap
}

// timeHeap orders elements by their time, the earliest first
// (container/heap). The records of remotes waiting after a 429 and the
// notification destinations waiting for their next attempt are kept in
// one each.
type timeHeap[T timed] []T

func (h timeHeap[T]) Len() int           { return len(h) }
func (h timeHeap[T]) Less(i, j int) bool { return h[i].dueAt().Before(h[j].dueAt()) }
func (h timeHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].setIndex(i)
	h[j].setIndex(j)
}

func (h *timeHeap[T]) Push(x any) {
	e, ok := x.(T)
	if !ok { // cannot happen: the owners push their own type
		return
	}
	e.setIndex(len(*h))
	*h = append(*h, e)
}

func (h *timeHeap[T]) Pop() any {
	old := *h
	e := old[len(old)-1]
	var zero T
	old[len(old)-1] = zero
	e.setIndex(-1)
	*h = old[:len(old)-1]
	return e
}
