package tinychat

// The slot fillers of the corpus: topics with the things they are about and the verbs that fit
// every one of those things, the people who appear in conversations, times, and the emotion
// lexicon with its intensities. All of it was written for this corpus.

// topic is one everyday subject of conversation.
type topic struct {
	name     string
	subjects []subject // what a conversation on this topic is about; the reply mentions it too
	verbs    []verb    // each fits every subject: "I {did} the {subject}"
}

// subject is a noun phrase that takes "the": "lemon cake" → "the lemon cake".
type subject struct {
	noun   string
	plural bool // "the pancakes were", "them"
}

// verb is an action on a subject in four forms: past ("tried"), base ("try"), gerund ("trying")
// and third person singular present ("tries"). Particles stay with the verb ("looked after").
type verb struct{ past, base, gerund, third string }

func s(noun string) subject  { return subject{noun: noun} }
func pl(noun string) subject { return subject{noun: noun, plural: true} }

// Verbs shared by several topics.
var (
	talkedAbout = verb{"talked about", "talk about", "talking about", "talks about"}
	planned     = verb{"planned", "plan", "planning", "plans"}
	workedOn    = verb{"worked on", "work on", "working on", "works on"}
	wentTo      = verb{"went to", "go to", "going to", "goes to"}
	finished    = verb{"finished", "finish", "finishing", "finishes"}
	helpedWith  = verb{"helped with", "help with", "helping with", "helps with"}
	lookedAfter = verb{"looked after", "look after", "looking after", "looks after"}
	dealtWith   = verb{"dealt with", "deal with", "dealing with", "deals with"}
	started     = verb{"started", "start", "starting", "starts"}
	prepared    = verb{"prepared", "prepare", "preparing", "prepares"}
	tried       = verb{"tried", "try", "trying", "tries"}
	watched     = verb{"watched", "watch", "watching", "watches"}
	lookedAt    = verb{"looked at", "look at", "looking at", "looks at"}
)

// topics are the everyday subjects of the corpus; a conversation picks one uniformly.
var topics = []topic{
	{"food", []subject{s("lemon cake"), s("noodle soup"), pl("pancakes"), s("apple pie"), pl("fish tacos"),
		s("cheese sandwich"), s("fried rice"), pl("strawberries"), s("mushroom pizza"), s("vegetable curry"),
		pl("dumplings"), pl("chocolate cookies"), s("tomato salad"), s("banana bread")},
		[]verb{tried, {"ate", "eat", "eating", "eats"}, {"shared", "share", "sharing", "shares"},
			{"ordered", "order", "ordering", "orders"}}},
	{"cooking", []subject{s("stew"), s("roast chicken"), s("bread dough"), s("pasta sauce"), s("omelette"),
		s("rice pudding"), pl("spring rolls"), s("pumpkin soup"), pl("meatballs"), s("carrot cake"),
		s("stir fry"), pl("muffins")},
		[]verb{{"cooked", "cook", "cooking", "cooks"}, {"made", "make", "making", "makes"}, prepared,
			{"tasted", "taste", "tasting", "tastes"}}},
	{"weather", []subject{s("rain"), s("snow"), s("storm"), s("heat"), s("fog"), s("wind"), s("sunshine"),
		s("frost"), s("heatwave"), s("hail"), s("drizzle"), s("cold snap")},
		[]verb{dealtWith, talkedAbout, {"walked home in", "walk home in", "walking home in", "walks home in"},
			{"went out in", "go out in", "going out in", "goes out in"}}},
	{"work", []subject{s("budget report"), s("team meeting"), s("new project"), s("client presentation"),
		s("quarterly review"), s("training session"), s("job interview"), s("sales pitch"), s("staff survey"),
		s("product launch")},
		[]verb{prepared, workedOn, talkedAbout, finished}},
	{"school", []subject{s("maths exam"), s("science project"), s("history essay"), s("spelling test"),
		s("school play"), s("field trip"), s("art class"), s("reading homework"), s("chemistry lab"),
		s("music lesson"), s("class debate"), s("poetry assignment")},
		[]verb{workedOn, {"prepared for", "prepare for", "preparing for", "prepares for"}, talkedAbout, finished}},
	{"pets", []subject{s("puppy"), s("old cat"), s("goldfish"), s("rabbit"), s("parrot"), s("kitten"),
		s("hamster"), s("tortoise"), s("new dog"), pl("guinea pigs"), s("budgie"), s("pony")},
		[]verb{{"fed", "feed", "feeding", "feeds"}, lookedAfter, {"played with", "play with", "playing with", "plays with"},
			{"cared for", "care for", "caring for", "cares for"}}},
	{"travel", []subject{s("train journey"), s("beach trip"), s("flight to Rome"), s("road trip"),
		s("mountain hike"), s("ferry ride"), s("city tour"), s("camping trip"), s("museum visit"), s("bus tour"),
		s("cabin stay"), s("island cruise")},
		[]verb{planned, {"booked", "book", "booking", "books"}, {"went on", "go on", "going on", "goes on"}, talkedAbout}},
	{"sports", []subject{s("football match"), s("tennis game"), s("swimming race"), s("basketball final"),
		s("cycling race"), s("rugby match"), s("marathon"), s("volleyball game"), s("cricket match"),
		s("ski race"), s("hockey game"), s("rowing race")},
		[]verb{watched, {"joined", "join", "joining", "joins"}, talkedAbout,
			{"trained for", "train for", "training for", "trains for"}}},
	{"music", []subject{s("concert"), s("jazz night"), s("choir practice"), s("folk festival"),
		s("violin recital"), s("karaoke night"), s("opera"), s("piano recital"), s("music festival"),
		s("band rehearsal"), s("open mic night"), s("drum circle")},
		[]verb{wentTo, {"listened to", "listen to", "listening to", "listens to"}, talkedAbout,
			{"performed at", "perform at", "performing at", "performs at"}}},
	{"friends", []subject{s("birthday party"), s("picnic"), s("game night"), s("movie night"),
		s("surprise dinner"), s("camping weekend"), s("barbecue"), s("reunion"), s("bowling night"),
		s("quiz night"), s("sleepover"), s("brunch")},
		[]verb{planned, wentTo, talkedAbout, {"hosted", "host", "hosting", "hosts"}}},
	{"family", []subject{s("family dinner"), s("wedding"), s("holiday visit"), s("anniversary party"),
		s("baby shower"), s("Sunday lunch"), s("family reunion"), s("graduation party"), s("housewarming"),
		s("birthday lunch")},
		[]verb{planned, wentTo, talkedAbout, helpedWith}},
	{"weekend plans", []subject{s("trip to the lake"), s("farmers market"), s("bike ride"),
		s("walk in the woods"), s("yard sale"), s("film festival"), s("boat ride"), s("visit to the zoo"),
		s("street fair"), s("pottery class"), s("picnic by the river"), s("long hike")},
		[]verb{planned, {"signed up for", "sign up for", "signing up for", "signs up for"}, talkedAbout,
			{"organised", "organise", "organising", "organises"}}},
	{"hobbies", []subject{s("knitting project"), s("model train"), s("jigsaw puzzle"), s("stamp collection"),
		s("photo album"), s("woodwork project"), s("quilt"), s("kite"), s("crossword"), s("sketchbook"),
		s("birdhouse"), s("scrapbook")},
		[]verb{workedOn, started, finished, talkedAbout}},
	{"shopping", []subject{pl("new shoes"), s("winter coat"), s("sofa"), s("birthday present"), s("bicycle"),
		s("lamp"), s("rug"), s("laptop"), pl("groceries"), s("raincoat"), s("backpack"), s("kitchen table")},
		[]verb{{"bought", "buy", "buying", "buys"}, {"picked out", "pick out", "picking out", "picks out"},
			lookedAt, talkedAbout}},
	{"health", []subject{s("doctor visit"), s("yoga class"), s("dentist appointment"), s("eye test"),
		s("check-up"), s("physio session"), s("blood test"), s("fitness class"), s("flu shot"),
		s("hearing test"), s("massage"), s("knee scan")},
		[]verb{{"had", "have", "having", "has"}, {"booked", "book", "booking", "books"}, talkedAbout,
			{"prepared for", "prepare for", "preparing for", "prepares for"}}},
	{"books", []subject{s("mystery novel"), s("cookbook"), s("poetry collection"), s("biography"),
		s("fantasy series"), s("comic book"), s("history book"), s("travel guide"), pl("short stories"),
		s("picture book"), s("science fiction novel"), s("gardening guide")},
		[]verb{{"read", "read", "reading", "reads"}, finished, started, {"borrowed", "borrow", "borrowing", "borrows"}}},
	{"movies", []subject{s("new thriller"), s("cartoon"), s("documentary"), s("romantic comedy"),
		s("space film"), s("western"), s("musical"), s("detective film"), s("nature film"), s("silent film"),
		s("superhero film"), s("sequel")},
		[]verb{watched, {"saw", "see", "seeing", "sees"}, talkedAbout, {"rented", "rent", "renting", "rents"}}},
	{"garden", []subject{pl("tomatoes"), pl("rose bushes"), s("herb bed"), s("apple tree"),
		s("vegetable patch"), pl("sunflowers"), s("lawn"), s("pond"), s("greenhouse"), pl("strawberry plants"),
		s("hedge"), s("compost heap")},
		[]verb{workedOn, lookedAfter, {"tidied", "tidy", "tidying", "tidies"},
			{"checked on", "check on", "checking on", "checks on"}}},
	{"neighbourhood", []subject{s("new bakery"), s("corner shop"), s("street party"), s("park cleanup"),
		s("library"), s("playground"), s("coffee shop"), s("flower market"), s("swimming pool"),
		s("post office"), s("town hall meeting"), s("bus stop")},
		[]verb{{"visited", "visit", "visiting", "visits"}, {"walked past", "walk past", "walking past", "walks past"},
			talkedAbout, {"checked out", "check out", "checking out", "checks out"}}},
	{"commute", []subject{s("morning train"), s("bus ride"), s("traffic jam"), s("cycle lane"), s("new tram"),
		s("ferry crossing"), s("car share"), s("night bus"), pl("road works"), s("motorway"), s("ride home"),
		s("station")},
		[]verb{dealtWith, talkedAbout, {"got through", "get through", "getting through", "gets through"},
			{"put up with", "put up with", "putting up with", "puts up with"}}},
	{"home", []subject{s("kitchen"), s("spare room"), s("leaky tap"), pl("new curtains"), s("attic"),
		s("garage"), s("bathroom"), s("front door"), pl("bookshelves"), s("washing machine"), s("porch"),
		s("cellar")},
		[]verb{{"cleaned", "clean", "cleaning", "cleans"}, {"sorted out", "sort out", "sorting out", "sorts out"},
			workedOn, talkedAbout}},
	{"holidays", []subject{s("holiday dinner"), s("new year party"), s("winter festival"), s("summer fair"),
		s("lantern parade"), s("harvest festival"), s("holiday market"), pl("fireworks"), s("costume party"),
		s("gift exchange"), pl("holiday cards"), s("spring parade")},
		[]verb{planned, talkedAbout, helpedWith,
			{"got ready for", "get ready for", "getting ready for", "gets ready for"}}},
	{"games", []subject{s("board game"), s("card game"), s("video game"), s("puzzle game"), s("word game"),
		s("dice game"), s("chess match"), s("treasure hunt"), s("escape room"), s("trivia contest"),
		s("table tennis match"), s("crossword contest")},
		[]verb{{"played", "play", "playing", "plays"}, tried, talkedAbout,
			{"set up", "set up", "setting up", "sets up"}}},
	{"art", []subject{s("watercolour painting"), s("charcoal sketch"), s("clay sculpture"), s("art show"),
		s("mural"), s("photo exhibit"), s("portrait"), s("craft fair"), s("gallery opening"), s("collage"),
		s("print workshop"), s("sculpture garden")},
		[]verb{workedOn, lookedAt, talkedAbout, {"went to see", "go to see", "going to see", "goes to see"}}},
}

// character is the person a conversation mentions besides the user: "my sister Lena".
type character struct {
	name string
	she  bool
}

var (
	womenNames = []string{"Anna", "Lena", "Maya", "Rosa", "Clara", "Nina", "Emma", "Julia", "Sara", "Hannah",
		"Grace", "Lucy", "Ella", "Ruth", "Priya", "Mei", "Ines", "Zoe", "Amara", "Leila"}
	menNames = []string{"Tom", "Sam", "Ben", "Leo", "Omar", "Jack", "Noah", "Adam", "Felix", "Hugo", "David",
		"Raj", "Kenji", "Luis", "Peter", "Max", "Owen", "Ivan", "Marco", "Elias"}
	// Relations that go with a name ("my neighbour Tom"); some depend on the person's sex.
	sharedRelations = []string{"friend", "cousin", "neighbour", "coworker", "roommate", "classmate", "best friend", "teammate"}
	womenRelations  = []string{"sister", "aunt", "niece", "daughter", "wife"}
	menRelations    = []string{"brother", "uncle", "nephew", "son", "husband"}
)

// Past times end a sentence about something done ("… yesterday"); future times one about a plan.
// Both read as noun phrases, so they also open a sentence ("Last night, …").
var (
	pastTimes = []string{"yesterday", "last night", "this morning", "last week", "last weekend",
		"last Saturday", "this afternoon", "earlier today", "last Friday", "the other day", "last Sunday",
		"two days ago", "after work yesterday"}
	futureTimes = []string{"tomorrow", "tonight", "this weekend", "next week", "next month",
		"tomorrow morning", "this evening", "next Saturday", "this Friday", "later this week",
		"next weekend", "after work tomorrow"}
)

// Emotion is one of the six reply classes of the corpus: five of Plutchik's basic emotions and
// neutral.
type Emotion string

const (
	Joy     Emotion = "joy"
	Trust   Emotion = "trust"
	Sadness Emotion = "sadness"
	Anger   Emotion = "anger"
	Fear    Emotion = "fear"
	Neutral Emotion = "neutral"
)

// Emotions lists the emotions in a fixed order: the five emotions, then Neutral.
var Emotions = []Emotion{Joy, Trust, Sadness, Anger, Fear, Neutral}

// feelings are the adjectives the {feel} slot draws from, by intensity (mild, clear, strong).
// Each reads after "is … about" and at the end of a clause ("and I am …!"); trust's also take a
// "that" clause. Intensifiers come from modifiers at the same level.
var feelings = map[Emotion][3][]string{
	Joy:     {{"glad", "pleased", "cheerful"}, {"happy", "delighted", "joyful", "excited"}, {"thrilled", "overjoyed", "ecstatic", "elated"}},
	Trust:   {{"sure"}, {"confident", "reassured"}, {"certain", "convinced"}},
	Sadness: {{"disappointed", "glum"}, {"sad", "unhappy", "gloomy"}, {"heartbroken", "devastated", "miserable", "crushed"}},
	Anger:   {{"annoyed", "irritated"}, {"angry", "frustrated", "bitter"}, {"furious", "livid", "outraged", "enraged"}},
	Fear:    {{"nervous", "uneasy", "worried"}, {"anxious", "scared"}, {"terrified", "panicked"}},
}

// modifiers intensify a feeling of the same level; "" leaves it bare. Mild ones also take "a
// little", except trust's ("a little sure" is not English).
var modifiers = [3][]string{
	{"", "", "quite", "fairly", "rather", "pretty"},
	{"", "", "really", "very", "so", "truly"},
	{"", "", "absolutely", "completely", "utterly"},
}

var mildExtra = []string{"a little", "a bit"}

// emotionNouns fill the {enoun} slot.
var emotionNouns = map[Emotion][]string{
	Joy:     {"joy", "delight", "happiness"},
	Trust:   {"trust", "faith", "confidence"},
	Sadness: {"sadness", "sorrow", "grief"},
	Anger:   {"anger", "rage", "fury"},
	Fear:    {"fear", "dread", "panic"},
}

// lexiconExtra are the other words of each emotion that templates, openers and closers use.
// Together with feelings and emotionNouns they make Lexicon, which the tests hold every reply to.
var lexiconExtra = map[Emotion][]string{
	Joy: {"love", "loved", "loves", "lovely", "wonderful", "wonderfully", "smile", "smiling", "smiles",
		"beaming", "grinning", "laughed", "hooray", "yay", "fantastic", "adore", "adores", "delight",
		"happiest", "happily", "cheerful", "fond", "brighter", "enjoy", "lights"},
	Trust: {"trust", "trusted", "trusts", "rely", "relied", "reliable", "dependable", "faith", "believe",
		"believed", "believes", "count", "counting", "safe", "loyal", "doubt", "doubted"},
	Sadness: {"sorry", "crying", "cried", "tears", "miss", "sadly", "sorrow", "lonely", "shame", "pity",
		"ache", "sighs", "heavy", "gloom", "letdown"},
	Anger: {"unacceptable", "ridiculous", "outrageous", "infuriating", "fuming", "stormed", "slammed",
		"livid", "furious", "angry", "resents", "ugh", "unbelievable", "grumbles"},
	Fear: {"afraid", "frightening", "frightened", "fright", "scary", "shaking", "shaken", "trembling",
		"dread", "dreads", "dangerous", "chills", "shivers", "yikes", "eek", "scares", "unsettling", "pale",
		"nervous", "scared"},
}
